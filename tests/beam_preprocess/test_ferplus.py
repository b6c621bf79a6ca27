"""FER+ labels: the reference code's majority rule, vote distributions, and the checked join."""

import itertools

import numpy as np
import pytest

from beam_preprocess.csv_rows import BadRow, FaceRow, HeaderError
from beam_preprocess.ferplus import (
    DroppedRow,
    FerPlusRow,
    check_header,
    join_face,
    majority_label,
    missing_fer2013_row,
    missing_ferplus_row,
    parse_ferplus_row,
    vote_distribution,
)

HEADER = (
    "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF")
PIXELS = bytes(48 * 48)


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


def test_distribution_is_the_raw_emotion_votes_over_their_sum():
    # Single votes are kept (no outlier removal) and unknown / NF votes are left out.
    assert vote_distribution([4, 5, 1, 0, 0, 0, 0, 0, 0, 0]) == pytest.approx(
        [0.4, 0.5, 0.1, 0, 0, 0, 0, 0])
    assert vote_distribution([0, 6, 0, 0, 0, 0, 0, 2, 1, 1]) == pytest.approx(
        [0, 0.75, 0, 0, 0, 0, 0, 0.25])
    with pytest.raises(ValueError, match="no emotion votes"):
        vote_distribution([0] * 8 + [4, 6])


def test_argmax_of_the_distribution_is_the_majority_label_for_every_kept_row():
    # Every way to spread 10 votes over 4 emotion columns, unknown and NF.
    columns = [0, 1, 4, 7, 8, 9]
    for spread in itertools.product(range(11), repeat=len(columns) - 1):
        if sum(spread) > 10:
            continue
        votes = [0] * 10
        for column, count in zip(columns, [*spread, 10 - sum(spread)], strict=True):
            votes[column] = count
        label = majority_label(votes)
        if label is not None:
            assert int(np.argmax(vote_distribution(votes))) == label, votes


def parsed(line, line_number):
    row = parse_ferplus_row(line, line_number)
    assert isinstance(row, FerPlusRow)
    return row


def test_lines_stand_for_the_fer2013_row_of_the_same_line_number():
    row = parsed("Training,fer0000000.png,0,10,0,0,0,0,0,0,0,0\n", 2)
    assert (row.row_index, row.usage, row.image_name) == (0, "Training", "fer0000000.png")
    assert row.votes == (0, 10, 0, 0, 0, 0, 0, 0, 0, 0)
    assert parsed("PublicTest,fer0028709.png,0,0,9,1,0,0,0,0,0,0\r\n", 7).row_index == 5


def face(row_index, usage="Training", label=3):
    split = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}[usage]
    return FaceRow(row_index, split, label, PIXELS)


def test_join_relabels_with_majority_and_distribution():
    joined = join_face(face(5), parsed("Training,fer0000005.png,0,7,0,3,0,0,0,0,0,0", 7))
    assert isinstance(joined, FaceRow)
    assert (joined.row_index, joined.split, joined.label) == (5, "train", 1)
    assert joined.label_distribution == pytest.approx([0, 0.7, 0, 0.3, 0, 0, 0, 0])
    assert joined.pixels == PIXELS


@pytest.mark.parametrize("line", [
    "Training,,10,0,0,0,0,0,0,0,0,0",                # no image name: FER+ does not use the row
    "Training,fer0000001.png,5,5,0,0,0,0,0,0,0,0",   # no majority
    "Training,fer0000001.png,0,0,0,0,0,0,0,0,0,10",  # not a face
])
def test_rows_without_a_label_are_dropped(line):
    assert join_face(face(1), parsed(line, 3)) == DroppedRow(1)


def test_a_line_of_another_row_is_a_bad_row_naming_both():
    bad = join_face(face(1233), parsed("Training,fer0001234.png,10,0,0,0,0,0,0,0,0,0", 1235))
    assert isinstance(bad, BadRow)
    assert (bad.line_number, bad.field) == (1235, "ferplus_csv Image name")
    assert bad.reason == "image name fer0001234.png does not match row 1233"
    assert bad.raw_start.startswith("Training,fer0001234.png")


def test_a_line_of_another_split_is_a_bad_row_naming_both_usages():
    bad = join_face(face(1233), parsed("PublicTest,fer0001233.png,10,0,0,0,0,0,0,0,0,0", 1235))
    assert isinstance(bad, BadRow) and bad.field == "ferplus_csv Usage"
    assert bad.reason == "FER+ line 1235: Usage PublicTest but fer2013 line 1235 is Training"
    # Rows FER+ does not use have no name to check, but their Usage still must agree.
    unused = join_face(face(2), parsed("PrivateTest,,10,0,0,0,0,0,0,0,0,0", 4))
    assert isinstance(unused, BadRow) and unused.field == "ferplus_csv Usage"


def test_an_image_name_that_is_not_a_fer_file_name_is_a_bad_row():
    bad = join_face(face(0), parsed("Training,img0.jpg,10,0,0,0,0,0,0,0,0,0", 2))
    assert isinstance(bad, BadRow)
    assert bad.reason == "image name 'img0.jpg' is not ferNNNNNNN.png"


def test_rows_present_in_only_one_file_are_bad_rows():
    assert missing_ferplus_row(face(40)) == BadRow(
        42, "ferplus_csv row", "fer2013 line 42 has no FER+ line 42", "")
    extra = missing_fer2013_row(parsed("Training,fer0000040.png,10,0,0,0,0,0,0,0,0,0", 42))
    assert (extra.line_number, extra.reason) == (42, "FER+ line 42 has no fer2013 row at line 42")


def test_malformed_lines_are_bad_rows_of_the_ferplus_file():
    bad = parse_ferplus_row("Training,fer1.png,1,2,x,0,0,0,0,0,0,0\n", 9)
    assert isinstance(bad, BadRow) and bad.line_number == 9 and bad.field == "ferplus_csv votes"
    short = parse_ferplus_row("Training,fer1.png,1,2\n", 4)
    assert isinstance(short, BadRow) and short.field == "ferplus_csv row"
    assert "expected 12 fields, found 4" in short.reason
    negative = parse_ferplus_row("Training,fer1.png,-1,0,0,0,0,0,0,0,0,0\n", 3)
    assert isinstance(negative, BadRow) and negative.reason == "vote counts must not be negative"


def test_header():
    check_header(HEADER + "\r\n")
    check_header("\ufeff" + HEADER)
    with pytest.raises(HeaderError, match="new.csv, line 1: .*not the FER\\+ header"):
        check_header("emotion,pixels,Usage", source="new.csv")
