"""Which shard a row goes to, in which order, and writing one shard file (no Beam transforms).

Assignment: a seeded 63-bit BLAKE2b hash of the row index picks the shard (hash mod shards) and
orders the rows inside it. A trainer interleaving shards record by record therefore reads no
trace of the CSV's order (fer2013 files in the wild come sorted by class or by split), while the
same input and seed give the same shards byte for byte on every run and runner. Python's hash()
would not do: it is salted per process for str and bytes. Shard sizes follow a multinomial
(28,709 training rows in 16 shards: 1,794 +- 41), not an exact round robin: exact balance would
need a global sort.

The 224x224 PNG payload is made here, after the last shuffle, and streamed to the file (platform
notes: a fixed num_shards on WriteToTFRecord shuffles the large records, 3.6 GB for 5,000 rows).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from collections.abc import Iterable, Iterator

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from beam_preprocess import images
from beam_preprocess.csv_rows import FaceRow
from beam_preprocess.record_format import resize_faces, serialize_example

_LOG = logging.getLogger(__name__)
_PROGRESS_EVERY = 2000
# Faces resized per call of record_format.resize_faces (TensorFlow): one call per face would
# cost ~1 ms of eager overhead each.
_RESIZE_BATCH = 256
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def shard_sort_key(row_index: int, seed: int) -> int:
    """A stable pseudo-random 63-bit number for the row: its shard and its place in the shard.

    63 bits, so that Beam's coders (signed 64-bit varints) can carry it between steps.
    """
    digest = hashlib.blake2b(row_index.to_bytes(8, "little"), digest_size=8,
                             key=seed.to_bytes(8, "little"))
    return int.from_bytes(digest.digest(), "little") >> 1


def shard_index(sort_key: int, num_shards: int) -> int:
    return sort_key % num_shards


@dataclasses.dataclass(frozen=True)
class ShardResult:
    """What one shard file holds; the driver's commit builds the manifest from these."""

    split: str
    filename: str
    records: int
    class_counts: tuple[int, ...]
    pixel_sum: float  # of the 48x48 source pixels, for the manifest's statistics.
    pixel_square_sum: float
    bytes: int = 0
    sha256: str = EMPTY_SHA256

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ShardResult:
        return cls(**{**data, "class_counts": tuple(data["class_counts"])})


class _ShardTally:
    """Running counts, pixel sums and digest of the records written so far."""

    def __init__(self, num_classes: int):
        self.class_counts = np.zeros(num_classes, dtype=np.int64)
        self.pixel_sum = 0.0
        self.pixel_square_sum = 0.0
        self.digest = hashlib.sha256()
        self.bytes = 0

    def add(self, row: FaceRow, framed_record: bytes) -> None:
        face = np.frombuffer(row.pixels, dtype=np.uint8)
        self.class_counts[row.label] += 1
        self.pixel_sum += float(face.sum(dtype=np.float64))
        self.pixel_square_sum += float(np.square(face, dtype=np.float64).sum())
        self.digest.update(framed_record)
        self.bytes += len(framed_record)

    def result(self, split: str, filename: str) -> ShardResult:
        return ShardResult(split, filename, int(self.class_counts.sum()),
                           tuple(int(c) for c in self.class_counts), self.pixel_sum,
                           self.pixel_square_sum, self.bytes, self.digest.hexdigest())


def framed_records(rows: list[FaceRow], image_size: int) -> Iterator[tuple[FaceRow, bytes]]:
    """(row, its record in TFRecord framing), in the order given; faces resized in batches."""
    for start in range(0, len(rows), _RESIZE_BATCH):
        chunk = rows[start:start + _RESIZE_BATCH]
        faces = np.stack([row.image() for row in chunk])[..., None]
        resized = resize_faces(faces, image_size).numpy()[..., 0]
        for row, image in zip(chunk, resized, strict=True):
            record = serialize_example(images.encode_png(image), row.label, row.row_index,
                                       row.label_distribution)
            yield row, _framed(record)


def write_shard_file(path: str, split: str, filename: str,
                     keyed_rows: Iterable[tuple[int, FaceRow]], image_size: int,
                     num_classes: int) -> ShardResult:
    """Writes the rows, ordered by sort key, to `path` from its first byte.

    A retried bundle rewrites the whole file, so a retry cannot duplicate records; on GCS the
    object appears only when its upload completes, so a reader never sees half of it.
    """
    rows = [row for _, row in sorted(keyed_rows, key=lambda pair: (pair[0], pair[1].row_index))]
    tally = _ShardTally(num_classes)
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        for written, (row, framed) in enumerate(framed_records(rows, image_size), start=1):
            f.write(framed)
            tally.add(row, framed)
            if written % _PROGRESS_EVERY == 0:
                _LOG.info("%s: %d records written", filename, written)
    _LOG.info("%s: done, %d records", filename, len(rows))
    return tally.result(split, filename)


def _framed(record: bytes) -> bytes:
    """One record in TFRecord framing (length, CRCs), as WriteToTFRecord writes it."""
    buffer = io.BytesIO()
    _TFRecordUtil.write_record(buffer, record)
    return buffer.getvalue()
