"""What became of the input rows, counted, and the --max_bad_fraction guard decided from it.

The pipeline counts rows with a CombineFn (transforms.CountRows) into one small RowCounts, so
nothing gathers the rows themselves on one worker. The shard writer reads it as a side input
and encodes nothing when the guard fails; the driver reads the same counts from the staging
directory afterwards and raises TooManyBadRowsError. Pure Python: no Beam, no TensorFlow.
"""

from __future__ import annotations

import dataclasses

from beam_preprocess.csv_rows import BadRow, FaceRow
from beam_preprocess.ferplus import DroppedRow
from beam_preprocess.user_error import UserError


class TooManyBadRowsError(UserError, ValueError):
    """More rows were invalid than --max_bad_fraction allows: probably the wrong file."""


@dataclasses.dataclass
class RowCounts:
    """Faces kept, rows rejected (by field, and the first of them) and rows FER+ dropped."""

    faces: int = 0
    bad: int = 0
    dropped: int = 0
    bad_by_field: dict[str, int] = dataclasses.field(default_factory=dict)
    first_bad: BadRow | None = None  # the bad row with the lowest line number

    @property
    def rows_read(self) -> int:
        return self.faces + self.bad + self.dropped

    def add(self, outcome: FaceRow | BadRow | DroppedRow) -> RowCounts:
        if isinstance(outcome, FaceRow):
            self.faces += 1
        elif isinstance(outcome, DroppedRow):
            self.dropped += 1
        else:
            self.merge(RowCounts(bad=1, bad_by_field={outcome.field: 1}, first_bad=outcome))
        return self

    def merge(self, other: RowCounts) -> RowCounts:
        self.faces += other.faces
        self.bad += other.bad
        self.dropped += other.dropped
        for field, count in other.bad_by_field.items():
            self.bad_by_field[field] = self.bad_by_field.get(field, 0) + count
        if other.first_bad is not None and (
                self.first_bad is None or _order(other.first_bad) < _order(self.first_bad)):
            self.first_bad = other.first_bad
        return self

    def too_many_bad(self, max_bad_fraction: float) -> bool:
        return bool(self.rows_read) and self.bad / self.rows_read > max_bad_fraction

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RowCounts:
        first = data.get("first_bad")
        return cls(**{**data, "first_bad": BadRow(**first) if first else None})


def _order(row: BadRow) -> tuple:
    # Total order, so that which bad row is "first" does not depend on how bundles merged.
    return row.line_number, row.field, row.reason, row.raw_start


def check_bad_fraction(counts: RowCounts, max_bad_fraction: float, input_path: str,
                       dead_letter_path: str) -> None:
    """Raises TooManyBadRowsError with the counts, the first bad line and the dead letters."""
    if not counts.too_many_bad(max_bad_fraction):
        return
    first = counts.first_bad
    raise TooManyBadRowsError(
        f"{input_path}: {counts.bad} of {counts.rows_read} data rows "
        f"({counts.bad / counts.rows_read:.2%}) are invalid, more than --max_bad_fraction="
        f"{max_bad_fraction}. First: line {first.line_number}, field {first.field}: "
        f"{first.reason}. All bad rows: {dead_letter_path}. No output was committed."
    )
