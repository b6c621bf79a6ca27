"""The driver's last step, after the pipeline finished: read what it staged, guard, commit.

The pipeline writes shards and small result files to `<output_dir>/.staging/<run_id>/`
(job_config.StagingFiles). This runs once, in the driver, after `wait_until_finish()`: not inside
the pipeline, where a runner may execute a step twice (Dataflow retries work items). It is
idempotent all the same, so that a driver that dies half-way can commit again with
`python -m beam_preprocess.finish --output_dir OUTPUT_DIR` (finish_staged_run):
- A shard's emptiness comes from the shard results, never from a missing file. A staged shard
  is moved into place; when its staged copy is gone (moved by an earlier commit), the
  destination must hold exactly the bytes the results describe (size and sha256), or the
  commit fails. Nothing ever overwrites a shard with anything but its staged copy.
- The old manifest is removed before any shard moves and the new one is written last, so a
  manifest always describes complete output. A commit that finds the very manifest it would
  write leaves it in place; side files are rewritten only when their bytes differ.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import posixpath
import re
import uuid
from collections.abc import Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_preprocess import class_chart
from beam_preprocess.job_config import (
    JOB_CONFIG_FILENAME,
    STAGING_FOLDER,
    JobConfig,
    StagingFiles,
)
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
from beam_preprocess.row_counts import RowCounts, TooManyBadRowsError, check_bad_fraction
from beam_preprocess.shard_writer import ShardResult
from beam_preprocess.user_error import UserError

_LOG = logging.getLogger(__name__)
_SHARD_PATTERN = re.compile(rf"^({'|'.join(SPLITS)})-\d{{5}}-of-\d{{5}}{re.escape(SHARD_SUFFIX)}$")
_HASH_BLOCK_BYTES = 1 << 20


class CommitError(UserError, RuntimeError):
    """The staged results and the files on disk disagree: the run must be repeated."""


@dataclasses.dataclass(frozen=True)
class StagedRun:
    """What a finished pipeline left for the driver."""

    counts: RowCounts
    shard_results: tuple[ShardResult, ...]  # one per shard that got rows, ordered by file name
    dead_letters: bytes  # bad_rows.jsonl: one JSON object per line, ordered by line number


def finish_run(config: JobConfig) -> Manifest:
    """Reads the staged run, applies the bad-row guard, commits, and removes the staging dir."""
    staged = read_staged_run(config.staging)
    try:
        check_bad_fraction(staged.counts, config.max_bad_fraction, config.input_path,
                           config.staging.dead_letters)
    except TooManyBadRowsError:
        _keep_only_dead_letters(config.staging)  # for the user to read
        raise
    manifest = commit(config, staged)
    _delete_tree(config.staging_dir)
    _remove_if_empty(posixpath.dirname(config.staging_dir))
    return manifest


def stage_job_config(config: JobConfig) -> None:
    """Written by the driver before the pipeline runs (see StagingFiles.job_config)."""
    _write_atomically(config.staging.job_config, config.to_json().encode(), "application/json")


def staged_runs(output_dir: str) -> list[str]:
    """The run ids staged in output_dir and not committed (a commit deletes its staging)."""
    pattern = posixpath.join(output_dir, STAGING_FOLDER, "*", JOB_CONFIG_FILENAME)
    return [posixpath.basename(posixpath.dirname(path)) for path in _matching(pattern)]


def finish_staged_run(output_dir: str, run_id: str | None = None) -> Manifest:
    """Commits a run whose pipeline finished but whose driver died before or during its
    commit; run_id may be left out when only one run is staged."""
    runs = staged_runs(output_dir)
    if run_id is None and len(runs) == 1:
        run_id = runs[0]
    if run_id is None or run_id not in runs:
        found = f"staged runs: {', '.join(runs)}" if runs else "no staged run"
        wanted = f"run {run_id}" if run_id else ("one run (give --run_id)" if runs else "a run")
        raise CommitError(f"{output_dir}/{STAGING_FOLDER}: looked for {wanted}, found {found}.")
    staging = StagingFiles(posixpath.join(output_dir, STAGING_FOLDER, run_id))
    config = JobConfig.from_json(_read(staging.job_config))
    manifest = finish_run(config)
    _LOG.info("Committed run %s: %s", run_id, posixpath.join(output_dir, MANIFEST_FILENAME))
    return manifest


def read_staged_run(staging: StagingFiles) -> StagedRun:
    """The pipeline's counts, shard results and (merged, ordered) dead letters."""
    counts_path = staging.row_counts + ".json"
    if not FileSystems.exists(counts_path):
        raise CommitError(f"{counts_path} not found: the pipeline did not finish its run.")
    counts = RowCounts.from_dict(json.loads(_read(counts_path)))
    results = [ShardResult.from_dict(json.loads(line))
               for path in _matching(staging.shard_results + "*.jsonl")
               for line in _read(path).splitlines() if line]
    return StagedRun(counts, tuple(sorted(results, key=lambda r: r.filename)),
                     _merge_dead_letters(staging))


def _merge_dead_letters(staging: StagingFiles) -> bytes:
    """Workers write dead letters in any order and any number of files; users get one file,
    ordered by line, the same on every run. Bad rows are few when the guard passes; when it
    fails this holds at most one JSON line per input row in the driver's memory."""
    parts = _matching(staging.dead_letter_parts + "*.jsonl")
    if not parts and FileSystems.exists(staging.dead_letters):  # merged by an earlier call
        return _read(staging.dead_letters).encode()
    lines = [line for path in parts for line in _read(path).splitlines() if line]
    lines.sort(key=lambda line: _dead_letter_order(json.loads(line)))
    merged = "".join(line + "\n" for line in lines).encode()
    _write_atomically(staging.dead_letters, merged, "application/jsonl")
    _delete_if_exists(parts)
    return merged


def _dead_letter_order(bad_row: dict) -> tuple:
    return bad_row["line_number"], bad_row["field"], bad_row["reason"], bad_row["raw_start"]


def build_manifest(config: JobConfig, staged: StagedRun) -> Manifest:
    written = {r.filename: r for r in staged.shard_results}
    if len(written) != len(staged.shard_results):
        raise CommitError(f"{config.staging_dir}: more than one result for a shard; re-run the "
                          "job.")
    splits = {}
    for split in SPLITS:
        count = config.num_shards[split]
        names = [shard_filename(split, i, count) for i in range(count)]
        results = [written.get(name, ShardResult(split, name, 0, (), 0.0, 0.0)) for name in names]
        class_counts = [sum(r.class_counts[c] for r in results if r.records)
                        for c in range(len(config.class_names))]
        splits[split] = SplitStats(
            records=sum(class_counts), class_counts=class_counts,
            shards=[ShardInfo(r.filename, r.records, r.bytes, r.sha256) for r in results])
    records = sum(s.records for s in splits.values())
    if records != staged.counts.faces:
        raise CommitError(f"{config.staging_dir}: the shard results hold {records} records but "
                          f"the pipeline counted {staged.counts.faces} faces; re-run the job.")
    return Manifest(
        image_size=config.image_size, label_set=config.label_set,
        class_names=list(config.class_names), splits=splits, bad_rows=staged.counts.bad,
        input_path=config.input_path, label_distribution=config.label_distribution,
        dropped_rows=staged.counts.dropped, shard_seed=config.shard_seed,
        dataset=config.dataset_name,
        statistics={"bad_rows_by_field": dict(sorted(staged.counts.bad_by_field.items())),
                    "source_pixels": _pixel_statistics(staged.shard_results)},
    )


def _pixel_statistics(results: Sequence[ShardResult]) -> dict:
    stats = {}
    for split in SPLITS:
        shards = [r for r in results if r.split == split]
        pixels = sum(r.records for r in shards) * SOURCE_IMAGE_SIZE**2
        if not pixels:
            continue
        mean = sum(r.pixel_sum for r in shards) / pixels
        variance = sum(r.pixel_square_sum for r in shards) / pixels - mean * mean
        stats[split] = {"pixel_mean": round(mean, 3), "pixel_std": round(math.sqrt(max(variance,
                                                                                      0.0)), 3)}
    return stats


def commit(config: JobConfig, staged: StagedRun) -> Manifest:
    """Moves the staged shards to output_dir and writes the side files, the manifest last."""
    manifest = build_manifest(config, staged)
    out = config.output_dir
    manifest_path = posixpath.join(out, MANIFEST_FILENAME)
    manifest_bytes = manifest.to_json().encode()
    if _read_bytes_or_none(manifest_path) != manifest_bytes:
        _delete_if_exists([manifest_path])  # no manifest may describe shards about to change
    shards = [shard for s in SPLITS for shard in manifest.splits[s].shards]
    for shard in shards:
        _place_shard(shard, config.staging_dir, out)
    _delete_if_exists(_stale_shards(out, {shard.name for shard in shards}))
    _write_if_changed(posixpath.join(out, BAD_ROWS_FILENAME), staged.dead_letters,
                      "application/jsonl")
    _write_if_changed(posixpath.join(out, CLASS_DISTRIBUTION_FILENAME),
                      class_chart.render(manifest), "image/png")
    _write_if_changed(manifest_path, manifest_bytes, "application/json")
    _LOG.info("Committed %d shard files and %s to %s", len(shards), MANIFEST_FILENAME, out)
    return manifest


def _place_shard(shard: ShardInfo, staging_dir: str, output_dir: str) -> None:
    destination = posixpath.join(output_dir, shard.name)
    staged = posixpath.join(staging_dir, shard.name)
    if shard.records == 0:  # the results say so; a missing staged file never does
        if _size_or_none(destination) != 0:
            _write_atomically(destination, b"", "application/octet-stream")
    elif FileSystems.exists(staged):
        FileSystems.rename([staged], [destination])
    elif not _holds(destination, shard):
        raise CommitError(
            f"{shard.name}: the staged file {staged} is gone and {destination} does not hold "
            f"the {shard.records} records the run wrote ({shard.bytes} bytes, sha256 "
            f"{shard.sha256[:12]}...); re-run the job.")


def _holds(path: str, shard: ShardInfo) -> bool:
    """Whether `path` has exactly the shard's bytes (read only when its staged copy is gone)."""
    if _size_or_none(path) != shard.bytes:
        return False
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        while block := f.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest() == shard.sha256


def _size_or_none(path: str) -> int | None:
    if not FileSystems.exists(path):
        return None
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def _stale_shards(output_dir: str, keep: set[str]) -> list[str]:
    return [path for path in _matching(posixpath.join(output_dir, f"*{SHARD_SUFFIX}"))
            if _SHARD_PATTERN.match(posixpath.basename(path))
            and posixpath.basename(path) not in keep]


def _keep_only_dead_letters(staging: StagingFiles) -> None:
    _delete_if_exists([p for p in _matching(staging.path("*")) if p != staging.dead_letters])


def _matching(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _read(path: str) -> str:
    return _read_bytes_or_none(path).decode("utf-8")


def _read_bytes_or_none(path: str) -> bytes | None:
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def _write_if_changed(path: str, data: bytes, mime_type: str) -> None:
    if _read_bytes_or_none(path) != data:
        _write_atomically(path, data, mime_type)


def _write_atomically(path: str, data: bytes, mime_type: str) -> None:
    # Locally a rename is atomic, so a reader sees the old file or the new one, never half of
    # one; a GCS object appears only when its upload completes anyway.
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with FileSystems.create(temporary, mime_type=mime_type,
                            compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
    FileSystems.rename([temporary], [path])


def _delete_if_exists(paths: Sequence[str]) -> None:
    existing = [p for p in paths if FileSystems.exists(p)]
    if existing:
        FileSystems.delete(existing)


def _remove_if_empty(directory: str) -> None:
    """The local .staging folder once no run is staged in it (GCS has no empty folders)."""
    if "://" not in directory:
        with contextlib.suppress(OSError):  # another run is staged there, or it is gone
            os.rmdir(directory)


def _delete_tree(directory: str) -> None:
    # GCS deletes a whole prefix only when given a trailing slash; locally that would keep the
    # directory itself and delete just its files.
    if directory.startswith("gs://"):
        if _matching(directory + "/*"):
            FileSystems.delete([directory + "/"])
    elif FileSystems.exists(directory):
        FileSystems.delete([directory])
