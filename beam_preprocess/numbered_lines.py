"""Reading a text file (local or gs://) as (line_number, line) pairs, in parallel byte ranges.

Beam's text sources split files for parallel reading but do not say which line of the file a
record came from; we need that for dead letters ("line 1234: ...") and as the row identity that
joins fer2013 with FER+ and assigns rows to shards. Two cheap passes over byte ranges give it
without reading the file on one worker: the first counts newlines per range, the second numbers
the lines that start in each range from the counts of the ranges before it. The Beam transform
is transforms.ReadNumberedLines; these are the plain functions it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

DEFAULT_RANGE_BYTES = 8 << 20
_READ_BLOCK_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class ByteRange:
    index: int
    start: int
    end: int  # exclusive; a line belongs to the range its first byte falls in.


def is_compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


def plan_byte_ranges(path: str, range_bytes: int = DEFAULT_RANGE_BYTES) -> list[ByteRange]:
    """Splits a file into ranges. A compressed file cannot be seeked: one range covers it."""
    if is_compressed(path):
        return [ByteRange(0, 0, 2**63 - 1)]
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    starts = range(0, max(size, 1), range_bytes)
    return [ByteRange(i, s, min(s + range_bytes, size)) for i, s in enumerate(starts)]


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.AUTO)


def count_newlines(path: str, byte_range: ByteRange) -> int:
    """Newline bytes in [start, end)."""
    count = 0
    with _open(path) as f:
        f.seek(byte_range.start)
        remaining = byte_range.end - byte_range.start
        while remaining > 0:
            block = f.read(min(_READ_BLOCK_BYTES, remaining))
            if not block:
                break
            count += block.count(b"\n")
            remaining -= len(block)
    return count


def read_numbered_lines(
    path: str, byte_range: ByteRange, newlines_before: int
) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, decoded line) for the lines starting in the range."""
    with _open(path) as f:
        position = byte_range.start
        line_number = newlines_before + 1
        if byte_range.start > 0:
            # Skip the tail of the line that started in the previous range.
            f.seek(byte_range.start - 1)
            tail = f.readline()
            if not tail.endswith(b"\n"):
                return
            position += len(tail) - 1
            line_number += 1 if len(tail) > 1 else 0
        while position < byte_range.end:
            line = f.readline()
            if not line:
                return
            yield line_number, line.decode("utf-8", errors="replace")
            line_number += 1
            position += len(line)


def read_first_line(path: str) -> str:
    """The header line, read in the driver so a wrong file fails before the job starts."""
    with _open(path) as f:
        return f.readline().decode("utf-8", errors="replace")
