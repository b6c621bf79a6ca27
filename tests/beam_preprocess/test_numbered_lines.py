"""Line numbering over parallel byte ranges must equal a plain sequential read."""

import gzip

import pytest

from beam_preprocess.numbered_lines import (
    count_newlines,
    plan_byte_ranges,
    read_numbered_lines,
)


def numbered(path, range_bytes):
    ranges = plan_byte_ranges(str(path), range_bytes)
    counts = [count_newlines(str(path), r) for r in ranges]
    out = []
    for r in ranges:
        out += list(read_numbered_lines(str(path), r, sum(counts[: r.index])))
    return out


@pytest.mark.parametrize("text", [
    "a,b\n1,x\n22,yy\n333,zzz\n",
    "a,b\r\n1,x\r\n\r\n22,yy\r\n333,zzz",  # CRLF, a blank line, no final newline
    "\ufeffheader\n" + "".join(f"row {i}\n" for i in range(200)),
    "one line without newline",
])
@pytest.mark.parametrize("range_bytes", [1, 2, 3, 7, 64, 1 << 20])
def test_every_line_once_with_its_number(tmp_path, text, range_bytes):
    path = tmp_path / "f.csv"
    path.write_bytes(text.encode())
    expected = list(enumerate(text.encode().decode().splitlines(keepends=True), start=1))
    assert numbered(path, range_bytes) == expected


def test_gzipped_input_is_read_as_one_range(tmp_path):
    path = tmp_path / "f.csv.gz"
    lines = [f"row {i}\n" for i in range(50)]
    path.write_bytes(gzip.compress("".join(lines).encode()))
    assert len(plan_byte_ranges(str(path), 16)) == 1
    assert numbered(path, 16) == list(enumerate(lines, start=1))
