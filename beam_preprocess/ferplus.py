"""FER+ labels (microsoft/FERPlus fer2013new.csv): parsing, the vote rules, and the checked join.

fer2013new.csv has one line per fer2013 row, in the same order: `Usage,Image name,<10 vote
counts>`, where the image name `ferNNNNNNN.png` is the fer2013 row index (0-based data row). The
join is by row index, and every joined pair is checked (same Usage, image name naming that row),
so a shifted, truncated or foreign file turns into bad rows that trip --max_bad_fraction instead of
silently relabelling every face.

Hard label: the FER+ reference code's "majority" mode. Categories with at most one vote are
zeroed; the top category wins if it has more than half of the remaining votes; rows whose winner
is `unknown` or `NF` (not a face), rows without a majority, and rows without an image name are
dropped (counted, not errors).

Soft label (`vote_distribution`): the raw votes of the 8 emotion columns divided by their sum,
with no outlier removal. This is the target of Barsoum et al. 2016's cross-entropy mode as the
paper states it ("the label distribution" of the taggers) and what Albanie et al. 2018 trained on.
The FERPlus reference code's "crossentropy" mode also zeroes single votes and keeps at most the
top three emotions covering 75% of the votes; those are training-time choices, and we store the
data they start from. For every kept row the distribution's argmax is the majority label: the
winner has at least two votes and more than any other category, and zeroing only removes
categories with one vote.
"""

from __future__ import annotations

import csv
import dataclasses
import re

from beam_preprocess.csv_rows import RAW_PREVIEW_CHARS, BadRow, FaceRow, HeaderError
from beam_preprocess.record_format import FERPLUS_CLASS_NAMES

_VOTE_COLUMNS = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
    "unknown", "NF",
)
_HEADER = ("Usage", "Image name", *_VOTE_COLUMNS)
_NUM_EMOTIONS = len(FERPLUS_CLASS_NAMES)
_IMAGE_NAME = re.compile(r"^fer(\d+)\.png$")
# Dead letters from this file name it in their field, so they cannot be mistaken for fer2013's.
FIELD_PREFIX = "ferplus_csv "


@dataclasses.dataclass(frozen=True)
class FerPlusRow:
    """One parsed line of fer2013new.csv."""

    line_number: int  # 1-based line in fer2013new.csv (the header is line 1)
    usage: str
    image_name: str  # "" for the rows FER+ does not use
    votes: tuple[int, ...]  # the 10 vote columns, in file order
    raw_start: str

    @property
    def row_index(self) -> int:
        """The fer2013 row this line stands for when the file is aligned (line number - 2)."""
        return self.line_number - 2


@dataclasses.dataclass(frozen=True)
class DroppedRow:
    """A valid face that FER+ does not label (no majority, not a face, or no image name)."""

    row_index: int


def check_header(header_line: str, source: str = "ferplus_csv") -> None:
    names = tuple(n.strip() for n in next(csv.reader([header_line.lstrip("\ufeff").rstrip()])))
    if names != _HEADER:
        raise HeaderError(
            f"{source}, line 1: header {list(names)!r} is not the FER+ header "
            f"{','.join(_HEADER)} (fer2013new.csv from microsoft/FERPlus)."
        )


def majority_label(votes: list[int] | tuple[int, ...]) -> int | None:
    """The FER+ class index by majority vote, or None when the row is dropped."""
    kept = [v if v > 1 else 0 for v in votes]
    total = sum(kept)
    top = max(range(len(kept)), key=kept.__getitem__)
    if total == 0 or kept[top] * 2 <= total or top >= _NUM_EMOTIONS:
        return None
    return top


def vote_distribution(votes: list[int] | tuple[int, ...]) -> tuple[float, ...]:
    """Each emotion's share of the emotion votes (8 values summing to 1; see module docstring)."""
    emotion_votes = votes[:_NUM_EMOTIONS]
    total = sum(emotion_votes)
    if total <= 0:
        raise ValueError(f"no emotion votes in {list(votes)}")
    return tuple(v / total for v in emotion_votes)


def parse_ferplus_row(line: str, line_number: int) -> FerPlusRow | BadRow:
    """A FerPlusRow, or a BadRow (field prefixed with `ferplus_csv `) for a malformed line."""
    text = line.lstrip("\ufeff").rstrip("\r\n")

    def bad(field: str, reason: str) -> BadRow:
        return BadRow(line_number, FIELD_PREFIX + field, reason, text[:RAW_PREVIEW_CHARS])

    try:
        fields = [f.strip() for f in next(csv.reader([text]), [])]
    except csv.Error as e:
        return bad("row", f"unparseable CSV ({e})")
    if len(fields) != len(_HEADER):
        return bad("row", f"expected {len(_HEADER)} fields, found {len(fields)}")
    try:
        votes = tuple(int(v) for v in fields[2:])
    except ValueError:
        return bad("votes", "vote counts must be integers")
    if any(v < 0 for v in votes):
        return bad("votes", "vote counts must not be negative")
    return FerPlusRow(line_number, fields[0], fields[1], votes, text[:RAW_PREVIEW_CHARS])


def join_face(face: FaceRow, ferplus: FerPlusRow) -> FaceRow | BadRow | DroppedRow:
    """The face relabelled by its FER+ line, after checking that the line is the face's."""
    mismatch = _alignment_error(face, ferplus)
    if mismatch is not None:
        return mismatch
    label = majority_label(ferplus.votes) if ferplus.image_name else None
    if label is None:
        return DroppedRow(face.row_index)
    return dataclasses.replace(face, label=label,
                               label_distribution=vote_distribution(ferplus.votes))


def _alignment_error(face: FaceRow, ferplus: FerPlusRow) -> BadRow | None:
    def bad(field: str, reason: str) -> BadRow:
        return BadRow(ferplus.line_number, FIELD_PREFIX + field, reason, ferplus.raw_start)

    if ferplus.image_name:  # blank names are FER+'s unused rows: nothing to check them against
        match = _IMAGE_NAME.match(ferplus.image_name)
        if match is None:
            return bad("Image name", f"image name {ferplus.image_name[:30]!r} is not "
                                     "ferNNNNNNN.png")
        if int(match.group(1)) != face.row_index:
            return bad("Image name", f"image name {ferplus.image_name} does not match row "
                                     f"{face.row_index}")
    if ferplus.usage != face.usage:
        return bad("Usage", f"FER+ line {ferplus.line_number}: Usage {ferplus.usage[:20]} but "
                            f"fer2013 line {face.line_number} is {face.usage}")
    return None


def missing_ferplus_row(face: FaceRow) -> BadRow:
    """The dead letter of a face whose FER+ line does not exist (a truncated fer2013new.csv)."""
    return BadRow(face.line_number, FIELD_PREFIX + "row",
                  f"fer2013 line {face.line_number} has no FER+ line {face.line_number}", "")


def missing_fer2013_row(ferplus: FerPlusRow) -> BadRow:
    """The dead letter of a FER+ line with no fer2013 row (a longer or misaligned file)."""
    return BadRow(ferplus.line_number, FIELD_PREFIX + "row",
                  f"FER+ line {ferplus.line_number} has no fer2013 row at line "
                  f"{ferplus.line_number}", ferplus.raw_start)
