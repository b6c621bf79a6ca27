"""The last step of a run: check the bad-row guard, move staged shards into place, write outputs.

Shards are written to `<output_dir>/.staging/<run_id>/` and moved here only when every shard is
done and the input passed the bad-row guard. The old manifest is removed before anything is
moved and the new one is written last, so a manifest always describes complete output: a run
that fails leaves the previous run's files untouched or no manifest at all.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import re
from collections.abc import Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_preprocess import class_chart
from beam_preprocess.csv_rows import BadRow
from beam_preprocess.job_config import JobConfig
from beam_preprocess.record_format import (
    BAD_ROWS_FILENAME,
    CLASS_DISTRIBUTION_FILENAME,
    MANIFEST_FILENAME,
    SHARD_SUFFIX,
    SOURCE_IMAGE_SIZE,
    SPLITS,
    Manifest,
    ShardInfo,
    SplitStats,
    shard_filename,
)
from beam_preprocess.shard_writer import ShardResult

_LOG = logging.getLogger(__name__)
_SHARD_PATTERN = re.compile(rf"^({'|'.join(SPLITS)})-\d{{5}}-of-\d{{5}}{re.escape(SHARD_SUFFIX)}$")


class TooManyBadRowsError(ValueError):
    """More rows were invalid than --max_bad_fraction allows: probably the wrong file."""


def _write_bytes(path: str, data: bytes, mime_type: str) -> None:
    with FileSystems.create(path, mime_type=mime_type,
                            compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def _delete_if_exists(paths: Sequence[str]) -> None:
    existing = [p for p in paths if FileSystems.exists(p)]
    if existing:
        FileSystems.delete(existing)


def _delete_tree(directory: str) -> None:
    # GCS deletes a whole prefix only when given a trailing slash; locally that would keep the
    # directory itself and delete just its files.
    FileSystems.delete([directory + "/" if directory.startswith("gs://") else directory])


def _bad_rows_jsonl(bad_rows: Sequence[BadRow]) -> bytes:
    ordered = sorted(bad_rows, key=lambda r: r.line_number)
    return "".join(json.dumps(r.to_dict()) + "\n" for r in ordered).encode()


def check_bad_fraction(bad_rows: Sequence[BadRow], rows_read: int, max_bad_fraction: float,
                       input_path: str, dead_letter_path: str) -> None:
    if not rows_read or len(bad_rows) / rows_read <= max_bad_fraction:
        return
    first = min(bad_rows, key=lambda r: r.line_number)
    raise TooManyBadRowsError(
        f"{input_path}: {len(bad_rows)} of {rows_read} data rows "
        f"({len(bad_rows) / rows_read:.2%}) are invalid, more than --max_bad_fraction="
        f"{max_bad_fraction}. First: line {first.line_number}, field {first.field}: "
        f"{first.reason}. All bad rows: {dead_letter_path}. No output was committed."
    )


def _split_statistics(results: Sequence[ShardResult]) -> dict:
    stats = {}
    for split in SPLITS:
        shards = [r for r in results if r.split == split]
        pixels = sum(r.records for r in shards) * SOURCE_IMAGE_SIZE**2
        if not pixels:
            continue
        mean = sum(r.pixel_sum for r in shards) / pixels
        variance = sum(r.pixel_square_sum for r in shards) / pixels - mean * mean
        std = math.sqrt(max(variance, 0.0))
        stats[split] = {"pixel_mean": round(mean, 3), "pixel_std": round(std, 3)}
    return stats


def build_manifest(results: Sequence[ShardResult], config: JobConfig, *,
                   bad_rows: Sequence[BadRow], dropped_rows: int) -> Manifest:
    num_shards, class_names = config.num_shards, config.class_names
    splits = {}
    for split in SPLITS:
        shards = [r for r in results if r.split == split]
        counts = [sum(r.class_counts[c] for r in shards) for c in range(len(class_names))]
        written = {r.filename: r for r in shards}
        infos = []
        for i in range(num_shards[split]):
            name = shard_filename(split, i, num_shards[split])
            result = written.get(name, ShardResult(split, name, 0, (), 0.0, 0.0))
            infos.append(ShardInfo(name, result.records, result.bytes, result.sha256))
        splits[split] = SplitStats(records=sum(counts), class_counts=counts, shards=infos)
    bad_by_field: dict[str, int] = {}
    for row in bad_rows:
        bad_by_field[row.field] = bad_by_field.get(row.field, 0) + 1
    return Manifest(
        image_size=config.image_size, label_set=config.label_set, class_names=list(class_names),
        splits=splits, bad_rows=len(bad_rows), input_path=config.input_path,
        dropped_rows=dropped_rows,
        statistics={"bad_rows_by_field": bad_by_field, "source_pixels": _split_statistics(results)},
    )


def _stale_shards(output_dir: str, keep: set[str]) -> list[str]:
    matches = FileSystems.match([posixpath.join(output_dir, f"*{SHARD_SUFFIX}")])[0].metadata_list
    return [m.path for m in matches
            if _SHARD_PATTERN.match(posixpath.basename(m.path))
            and posixpath.basename(m.path) not in keep]


def _commit(manifest: Manifest, config: JobConfig) -> None:
    """Moves the staged shards to output_dir and writes the side files, the manifest last."""
    out = config.output_dir
    _delete_if_exists([posixpath.join(out, MANIFEST_FILENAME)])
    filenames = [f for s in SPLITS for f in manifest.splits[s].files]
    sources = [posixpath.join(config.staging_dir, name) for name in filenames]
    for source in sources:
        if not FileSystems.exists(source):  # a shard that got no rows is written empty
            _write_bytes(source, b"", "application/octet-stream")
    _delete_if_exists(_stale_shards(out, set(filenames)))
    FileSystems.rename(
        [*sources, posixpath.join(config.staging_dir, BAD_ROWS_FILENAME)],
        [*(posixpath.join(out, n) for n in filenames), posixpath.join(out, BAD_ROWS_FILENAME)],
    )
    _write_bytes(posixpath.join(out, CLASS_DISTRIBUTION_FILENAME), class_chart.render(manifest),
                 "image/png")
    _write_bytes(posixpath.join(out, MANIFEST_FILENAME), manifest.to_json().encode(),
                 "application/json")
    _LOG.info("Committed %d shard files and %s to %s", len(filenames), MANIFEST_FILENAME, out)


def finish_run(_, *, config: JobConfig, shard_results: Sequence[ShardResult],
               bad_rows: Sequence[BadRow], dropped_row_indices: Sequence[int]) -> Manifest:
    """Runs once, after every shard is written (the side inputs guarantee it)."""
    dead_letters = posixpath.join(config.staging_dir, BAD_ROWS_FILENAME)
    _write_bytes(dead_letters, _bad_rows_jsonl(bad_rows), "application/jsonl")
    manifest = build_manifest(shard_results, config, bad_rows=bad_rows,
                              dropped_rows=len(dropped_row_indices))
    good_rows = sum(s.records for s in manifest.splits.values())
    rows_read = good_rows + len(bad_rows) + manifest.dropped_rows
    try:
        check_bad_fraction(bad_rows, rows_read, config.max_bad_fraction, config.input_path,
                           dead_letters)
    except TooManyBadRowsError:
        # Keep only the dead letters, for the user to read.
        _delete_if_exists([posixpath.join(config.staging_dir, r.filename) for r in shard_results])
        raise
    _commit(manifest, config)
    _delete_tree(config.staging_dir)
    return manifest
