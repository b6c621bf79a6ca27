"""Reading and validating fer2013 CSV rows (pure Python: no Beam, no TensorFlow).

The header is parsed once, by column name, so both `emotion,pixels,Usage` (the Kaggle 2013 file)
and `emotion, Usage, pixels` (the later icml_face_data.csv) are accepted; quoted or bare pixel
fields, CRLF line ends and a UTF-8 BOM are tolerated. Every data row is validated and becomes
either a FaceRow or a BadRow that says what is wrong and where.
"""

from __future__ import annotations

import csv
import dataclasses

import numpy as np

from beam_preprocess.record_format import SOURCE_IMAGE_SIZE, USAGE_TO_SPLIT
from beam_preprocess.user_error import UserError

REQUIRED_COLUMNS = ("emotion", "pixels", "Usage")
NUM_PIXELS = SOURCE_IMAGE_SIZE * SOURCE_IMAGE_SIZE
NUM_FER2013_CLASSES = 7
RAW_PREVIEW_CHARS = 80
BOM = "\ufeff"
SPLIT_TO_USAGE = {split: usage for usage, split in USAGE_TO_SPLIT.items()}


class HeaderError(UserError, ValueError):
    """The file is not a fer2013-format CSV; raised before any output is written."""


@dataclasses.dataclass(frozen=True)
class ColumnLayout:
    """Positions of the required columns in a data row."""

    emotion: int
    pixels: int
    usage: int
    num_columns: int


@dataclasses.dataclass(frozen=True)
class FaceRow:
    """A valid row: its 0-based data-row index, split, label and 48x48 uint8 pixels.

    `label` is fer2013's emotion, or FER+'s majority vote once joined (ferplus.join_face);
    `label_distribution` is set only for FER+ labels: each class's share of the votes.
    """

    row_index: int
    split: str
    label: int
    pixels: bytes  # NUM_PIXELS bytes, row-major; bytes keep Beam's encoding cheap.
    label_distribution: tuple[float, ...] | None = None

    @property
    def line_number(self) -> int:
        """1-based line of the source CSV (the header is line 1)."""
        return self.row_index + 2

    @property
    def usage(self) -> str:
        """The CSV's Usage value this row came with (Training, PublicTest, PrivateTest)."""
        return SPLIT_TO_USAGE[self.split]

    def image(self) -> np.ndarray:
        return np.frombuffer(self.pixels, dtype=np.uint8).reshape(
            SOURCE_IMAGE_SIZE, SOURCE_IMAGE_SIZE)


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A rejected row, as written to the dead-letter file."""

    line_number: int  # 1-based line in the source file (the header is line 1).
    field: str
    reason: str
    raw_start: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _split_fields(line: str) -> list[str]:
    return next(csv.reader([line]))


def _strip_line(line: str) -> str:
    return line.lstrip(BOM).rstrip("\r\n")


def parse_header(header_line: str, source: str = "input") -> ColumnLayout:
    """Finds the required columns by name; raises HeaderError naming what is wrong."""
    names = [name.strip() for name in _split_fields(_strip_line(header_line))]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing or len(set(names)) != len(names):
        raise HeaderError(
            f"{source}, line 1: header {names!r} is not a fer2013 header; expected the columns "
            f"{', '.join(REQUIRED_COLUMNS)} (any order), e.g. 'emotion,pixels,Usage'."
        )
    return ColumnLayout(
        emotion=names.index("emotion"),
        pixels=names.index("pixels"),
        usage=names.index("Usage"),
        num_columns=len(names),
    )


def is_blank(line: str) -> bool:
    return not _strip_line(line).strip()


def parse_row(line: str, line_number: int, layout: ColumnLayout) -> FaceRow | BadRow:
    """Validates one data line. Never raises for bad content: returns a BadRow instead."""
    text = _strip_line(line)

    def bad(field: str, reason: str) -> BadRow:
        return BadRow(line_number, field, reason, text[:RAW_PREVIEW_CHARS])

    try:
        fields = [f.strip() for f in _split_fields(text)]
    except csv.Error as e:
        return bad("row", f"unparseable CSV ({e})")
    if len(fields) != layout.num_columns:
        return bad("row", f"expected {layout.num_columns} fields, found {len(fields)}")

    emotion = fields[layout.emotion]
    if not _is_ascii_int(emotion) or not 0 <= int(emotion) < NUM_FER2013_CLASSES:
        return bad("emotion", f"{emotion[:20]!r} is not an integer 0..{NUM_FER2013_CLASSES - 1}")

    usage = fields[layout.usage]
    if usage not in USAGE_TO_SPLIT:
        return bad("Usage", f"{usage[:20]!r} is not one of {', '.join(USAGE_TO_SPLIT)}")

    pixels_or_reason = _parse_pixels(fields[layout.pixels])
    if isinstance(pixels_or_reason, str):
        return bad("pixels", pixels_or_reason)

    return FaceRow(
        row_index=line_number - 2,
        split=USAGE_TO_SPLIT[usage],
        label=int(emotion),
        pixels=pixels_or_reason,
    )


def _is_ascii_int(token: str) -> bool:
    digits = token[1:] if token[:1] in "+-" else token
    return digits.isascii() and digits.isdigit()


def _parse_pixels(field: str) -> bytes | str:
    """The pixel bytes, or the reason they are invalid."""
    try:
        values = np.fromstring(field, dtype=np.int64, sep=" ")
    except ValueError:
        tokens = field.split()
        first_bad = next((t for t in tokens if not _is_ascii_int(t)), field)
        return f"{first_bad[:20]!r} is not an integer"
    if values.size != NUM_PIXELS:
        return f"expected {NUM_PIXELS} values, found {values.size}"
    out_of_range = (values < 0) | (values > 255)
    if out_of_range.any():
        position = int(np.argmax(out_of_range))
        return f"value {int(values[position])} at position {position} is outside 0..255"
    return values.astype(np.uint8).tobytes()
