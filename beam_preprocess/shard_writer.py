"""Writing one TFRecord shard from its grouped rows, into the run's staging directory.

Rows are grouped by (split, shard) while they are still small (2.3 kB of 48x48 pixels), and the
224x224 PNG payload is made here, after the last shuffle, and streamed to the file: a fixed
num_shards on WriteToTFRecord would shuffle the large records instead (platform notes: 3.6 GB
for 5,000 rows). Assignment by row index makes re-runs write the same records to the same
shards in the same order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import posixpath

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from beam_preprocess import images
from beam_preprocess.csv_rows import FaceRow
from beam_preprocess.record_format import resize_faces, serialize_example, shard_filename

_LOG = logging.getLogger(__name__)
_PROGRESS_EVERY = 2000
# Faces resized per call of record_format.resize_faces (TensorFlow): one call per face would
# cost ~1 ms of eager overhead each.
_RESIZE_BATCH = 256


def shard_key(row: FaceRow, num_shards: dict[str, int]) -> tuple[str, int]:
    """Round-robin by row index: balanced shards whatever the order of classes in the file."""
    return row.split, row.row_index % num_shards[row.split]


@dataclasses.dataclass(frozen=True)
class ShardResult:
    """What one shard holds; the commit step builds the manifest from these."""

    split: str
    filename: str
    records: int
    class_counts: tuple[int, ...]
    pixel_sum: float  # of the 48x48 source pixels, for the manifest's statistics.
    pixel_square_sum: float
    bytes: int = 0
    sha256: str = hashlib.sha256(b"").hexdigest()


class WriteShard(beam.DoFn):
    """((split, shard_index), rows) -> ShardResult, writing `<staging_dir>/<shard file>`."""

    def __init__(self, staging_dir: str, image_size: int, num_shards: dict[str, int],
                 num_classes: int):
        self._staging_dir = staging_dir
        self._image_size = image_size
        self._num_shards = num_shards
        self._num_classes = num_classes
        self._records = beam.metrics.Metrics.counter("beam_preprocess", "records_written")

    def process(self, keyed_rows):
        (split, shard_index), rows = keyed_rows
        filename = shard_filename(split, shard_index, self._num_shards[split])
        path = posixpath.join(self._staging_dir, filename)
        counts = np.zeros(self._num_classes, dtype=np.int64)
        pixel_sum = pixel_square_sum = 0.0
        digest, size, written = hashlib.sha256(), 0, 0
        rows = sorted(rows, key=lambda r: r.row_index)
        # A retried bundle rewrites the same staged file from the start: writes are idempotent.
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for start in range(0, len(rows), _RESIZE_BATCH):
                chunk = rows[start:start + _RESIZE_BATCH]
                faces = np.stack([row.image() for row in chunk])
                resized = resize_faces(faces[..., None], self._image_size).numpy()[..., 0]
                for row, face, image in zip(chunk, faces, resized, strict=True):
                    record = serialize_example(images.encode_png(image), row.label,
                                               row.row_index)
                    framed = _framed(record)
                    f.write(framed)
                    digest.update(framed)
                    size += len(framed)
                    counts[row.label] += 1
                    pixel_sum += float(face.sum(dtype=np.float64))
                    pixel_square_sum += float(np.square(face, dtype=np.float64).sum())
                    self._records.inc()
                    written += 1
                    if written % _PROGRESS_EVERY == 0:
                        _LOG.info("%s: %d records written", filename, written)
        _LOG.info("%s: done, %d records", filename, written)
        yield ShardResult(split, filename, int(counts.sum()), tuple(int(c) for c in counts),
                          pixel_sum, pixel_square_sum, size, digest.hexdigest())


def _framed(record: bytes) -> bytes:
    """One record in TFRecord framing (length, CRCs), as WriteToTFRecord writes it."""
    import io

    buffer = io.BytesIO()
    _TFRecordUtil.write_record(buffer, record)
    return buffer.getvalue()
