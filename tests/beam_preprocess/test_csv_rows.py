"""Parsing and validating fer2013 rows: every accepted variant and every kind of bad row."""

import numpy as np
import pytest

from beam_preprocess import csv_rows
from beam_preprocess.csv_rows import BadRow, FaceRow, HeaderError, parse_header, parse_row
from tests.support.fer_csv import ICML_HEADER, csv_text, random_faces

ROWS = random_faces(3, seed=1)


def parse_text(text: str):
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    layout = parse_header(text.splitlines(keepends=True)[0])
    return [parse_row(line, n, layout) for n, line in enumerate(lines[1:], start=2)]


@pytest.mark.parametrize("variant", [
    {},
    {"quote_pixels": True},
    {"line_end": "\r\n"},
    {"bom": True},
    {"header": ICML_HEADER},
    {"header": ICML_HEADER, "quote_pixels": True, "line_end": "\r\n", "bom": True},
])
def test_accepted_variants_give_the_same_faces(variant):
    parsed = parse_text(csv_text(ROWS, **variant))
    assert [type(r) for r in parsed] == [FaceRow] * 3
    for row, (emotion, face, _) in zip(parsed, ROWS, strict=True):
        assert row.label == emotion
        assert np.array_equal(row.image(), face)
    assert [r.split for r in parsed] == ["train", "validation", "test"]
    assert [r.row_index for r in parsed] == [0, 1, 2]


def test_icml_rows_with_spaces_after_commas_parse():
    layout = parse_header("emotion, Usage, pixels")
    row = parse_row("3, PublicTest, " + " ".join(["7"] * 2304), 5, layout)
    assert isinstance(row, FaceRow) and row.split == "validation" and row.row_index == 3


@pytest.mark.parametrize("header", [
    "label,pixels,Usage", "emotion,pixels", "emotion;pixels;Usage", "",
    "emotion,pixels,Usage,Usage",
])
def test_wrong_header_is_rejected_naming_line_and_columns(header):
    with pytest.raises(HeaderError, match=r"data\.csv, line 1: .*emotion, pixels, Usage"):
        parse_header(header, source="data.csv")


GOOD_PIXELS = " ".join(["0"] * 2304)


@pytest.mark.parametrize("line, field, reason", [
    (f"7,{GOOD_PIXELS},Training", "emotion", "'7' is not an integer 0..6"),
    (f"-1,{GOOD_PIXELS},Training", "emotion", "'-1' is not an integer 0..6"),
    (f"happy,{GOOD_PIXELS},Training", "emotion", "'happy' is not an integer 0..6"),
    (f"1,{GOOD_PIXELS},Train", "Usage", "'Train' is not one of Training, PublicTest, PrivateTest"),
    ("1,1 2 3,Training", "pixels", "expected 2304 values, found 3"),
    (f"1,{GOOD_PIXELS} 0,Training", "pixels", "expected 2304 values, found 2305"),
    ("1,,Training", "pixels", "expected 2304 values, found 0"),
    ("1," + " ".join(["0"] * 100 + ["2.5"] + ["0"] * 2203) + ",Training", "pixels",
     "'2.5' is not an integer"),
    ("1," + " ".join(["0"] * 100 + ["x"] + ["0"] * 2203) + ",Training", "pixels",
     "'x' is not an integer"),
    ("1," + " ".join(["0"] * 10 + ["256"] + ["0"] * 2293) + ",Training", "pixels",
     "value 256 at position 10 is outside 0..255"),
    ("1," + " ".join(["-3"] + ["0"] * 2303) + ",Training", "pixels",
     "value -3 at position 0 is outside 0..255"),
    (f"1,{GOOD_PIXELS}", "row", "expected 3 fields, found 2"),
    (f"1,{GOOD_PIXELS},Training,extra", "row", "expected 3 fields, found 4"),
])
def test_bad_rows_say_what_is_wrong_and_where(line, field, reason):
    layout = parse_header("emotion,pixels,Usage")
    row = parse_row(line + "\r\n", 42, layout)
    assert isinstance(row, BadRow)
    assert (row.line_number, row.field, row.reason) == (42, field, reason)
    assert row.raw_start == line[: csv_rows.RAW_PREVIEW_CHARS]


def test_blank_lines_are_recognised():
    assert csv_rows.is_blank("\r\n") and csv_rows.is_blank("   \n")
    assert not csv_rows.is_blank("0,1,Training\n")
