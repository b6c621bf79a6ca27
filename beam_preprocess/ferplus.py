"""FER+ labels (microsoft/FERPlus fer2013new.csv): majority vote, joined to fer2013 by row order.

The vote rule is the FER+ reference code's "majority" mode: categories with at most one vote are
zeroed; the top category wins if it has more than half of the remaining votes; rows whose winner
is `unknown` or `NF` (not a face), rows without a majority, and rows without an image name are
dropped (counted, not errors).
"""

from __future__ import annotations

import csv

from beam_preprocess.csv_rows import BadRow, HeaderError
from beam_preprocess.record_format import FERPLUS_CLASS_NAMES

_VOTE_COLUMNS = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
    "unknown", "NF",
)
_HEADER = ("Usage", "Image name", *_VOTE_COLUMNS)
_NUM_EMOTIONS = len(FERPLUS_CLASS_NAMES)


def check_header(header_line: str, source: str = "ferplus_csv") -> None:
    names = tuple(n.strip() for n in next(csv.reader([header_line.lstrip("\ufeff").rstrip()])))
    if names != _HEADER:
        raise HeaderError(
            f"{source}, line 1: header {list(names)!r} is not the FER+ header "
            f"{','.join(_HEADER)} (fer2013new.csv from microsoft/FERPlus)."
        )


def majority_label(votes: list[int]) -> int | None:
    """The FER+ class index by majority vote, or None when the row is dropped."""
    kept = [v if v > 1 else 0 for v in votes]
    total = sum(kept)
    top = max(range(len(kept)), key=kept.__getitem__)
    if total == 0 or kept[top] * 2 <= total or top >= _NUM_EMOTIONS:
        return None
    return top


def parse_ferplus_row(line: str, line_number: int) -> tuple[int, int | None] | BadRow:
    """(fer2013 row index, FER+ label or None if dropped), or a BadRow for malformed lines."""
    text = line.rstrip("\r\n")
    fields = [f.strip() for f in next(csv.reader([text]), [])]
    if len(fields) != len(_HEADER):
        return BadRow(line_number, "row", f"expected {len(_HEADER)} fields, found {len(fields)}",
                      text[:80])
    try:
        votes = [int(v) for v in fields[2:]]
    except ValueError:
        return BadRow(line_number, "votes", "vote counts must be integers", text[:80])
    row_index = line_number - 2
    if not fields[1]:
        return row_index, None
    return row_index, majority_label(votes)
