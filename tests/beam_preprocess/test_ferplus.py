"""FER+ majority-vote labels (the FERPlus reference code's 'majority' mode)."""

import pytest

from beam_preprocess.csv_rows import BadRow, HeaderError
from beam_preprocess.ferplus import check_header, majority_label, parse_ferplus_row

HEADER = (
    "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF")


@pytest.mark.parametrize("votes, label", [
    ([10, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0),           # unanimous neutral
    ([4, 6, 0, 0, 0, 0, 0, 0, 0, 0], 1),            # 6 of 10 > half
    ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], None),         # tie: no majority
    ([4, 5, 1, 0, 0, 0, 0, 0, 0, 0], 1),            # the lone vote is zeroed: 5 of 9
    ([1, 1, 1, 1, 1, 1, 1, 3, 0, 0], 7),            # only contempt survives zeroing
    ([0, 0, 0, 0, 0, 0, 0, 0, 7, 3], None),         # winner 'unknown' is dropped
    ([2, 0, 0, 0, 0, 0, 0, 0, 0, 8], None),         # winner NF (not a face) is dropped
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], None),         # nothing survives zeroing
    ([3, 3, 3, 0, 0, 0, 0, 0, 0, 0], None),         # 3 of 9 is not a majority
])
def test_majority_rule(votes, label):
    assert majority_label(votes) == label


def test_rows_are_keyed_by_fer2013_row_index():
    assert parse_ferplus_row("Training,fer0000000.png,0,10,0,0,0,0,0,0,0,0\n", 2) == (0, 1)
    assert parse_ferplus_row("PublicTest,fer0028709.png,0,0,9,1,0,0,0,0,0,0\r\n", 7) == (5, 2)


def test_rows_without_image_name_are_dropped():
    assert parse_ferplus_row("Training,,10,0,0,0,0,0,0,0,0,0\n", 3) == (1, None)


def test_malformed_rows_are_bad_rows():
    bad = parse_ferplus_row("Training,fer1.png,1,2,x,0,0,0,0,0,0,0\n", 9)
    assert isinstance(bad, BadRow) and bad.line_number == 9 and bad.field == "votes"
    short = parse_ferplus_row("Training,fer1.png,1,2\n", 4)
    assert isinstance(short, BadRow) and "expected 12 fields, found 4" in short.reason


def test_header():
    check_header(HEADER + "\r\n")
    check_header("\ufeff" + HEADER)
    with pytest.raises(HeaderError, match="new.csv, line 1: .*not the FER\\+ header"):
        check_header("emotion,pixels,Usage", source="new.csv")
