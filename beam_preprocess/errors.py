"""Turning the job's expected failures into one clear line instead of a stack trace."""

from __future__ import annotations

from absl import flags

from beam_preprocess.csv_rows import HeaderError
from beam_preprocess.row_counts import TooManyBadRowsError
from beam_preprocess.user_error import UserError

# absl's flags.Error: a malformed or missing flag.
_EXPECTED = (UserError, flags.Error)


def user_facing_message(error: BaseException) -> str | None:
    """The message of an expected failure, also when a runner re-raised it wrapped; else None."""
    seen = error
    while seen is not None:
        if isinstance(seen, _EXPECTED):
            return str(seen).split(" [while running")[0]
        seen = seen.__cause__ or seen.__context__
    # Runners that re-raise a worker's error as text keep its class name in the message.
    text = str(error)
    for expected in (TooManyBadRowsError, HeaderError):
        marker = f"{expected.__name__}: "
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0].split(" [while running")[0]
    return None
