"""The record of what a job_dir is training, so that a rerun resumes only the same training.

A rerun with the same --job_dir resumes from its backups. That is right only when everything
that shapes the training is the same: the records (by content), the model, the cut, the
global batch, the schedule, the recipe. `job_dir/run.json` keeps those settings; a rerun
whose settings differ stops with the differences named, before anything is written, and
`--start_over` discards the old run's backups, checkpoints and outputs instead.

A cloud job is restarted with its arguments unchanged (a Vertex AI Spot preemption, a worker
restart), so `--start_over` alone would start over at every restart. With `--run_id` (which
`launch train` sets) the record keeps the id of the run that started over, and a restart of
that run resumes: a run starts over once.

Settings that do not change what is trained may differ on a rerun: where and how it runs
(strategy, devices, XLA, steps per execution, backup intervals, timeouts), the final
evaluation's test-time augmentation, and the feature cache's placement.
"""

from __future__ import annotations

import json
import posixpath

import tensorflow as tf

from trainer.config import FIELD_PARTS, ConfigError, TrainConfig
from trainer.training.output_dirs import OutputDirs

RUN_RECORD_FILENAME = "run.json"
RUN_ID_KEY = "run_id"  # beside the settings in run.json; never compared
RESUMABLE_CHANGES = frozenset({
    "data_dir", "job_dir", "strategy", "tpu", "logical_cpu_devices", "jit_compile",
    "steps_per_execution", "backup_every_steps", "backup_every_minutes", "start_over",
    "collective_timeout_seconds", "tta", "run_id", "tta_crop_fraction", "cache_memory_gb",
    "cache_dtype", "cache_features", "data_in_memory_gb", "batch_size",
})


def run_settings(config: TrainConfig, data_digest: str, replicas: int,
                 steps_per_epoch: int) -> dict:
    """What must not change between a job and its resume. The per-replica batch may change
    (with the replica count) as long as the global batch stays."""
    settings = {name: list(value) if isinstance(value, tuple) else value
                for name, value in config.flag_values().items()
                if name not in RESUMABLE_CHANGES}
    settings.update(data=data_digest, global_batch_size=config.loop.batch_size * replicas,
                    steps_per_epoch=steps_per_epoch)
    return settings


def _differences(before: dict, now: dict) -> list[str]:
    names = sorted(set(before) | set(now))
    return [f"{'--' + name if name in FIELD_PARTS else name}: "
            f"{before.get(name)!r} -> {now.get(name)!r}"
            for name in names if before.get(name) != now.get(name)]


def _hint(before: dict, now: dict, replicas: int) -> str:
    batch_before = before.get("global_batch_size")
    if batch_before and batch_before != now["global_batch_size"] and batch_before % replicas == 0:
        return (f" With {replicas} replica(s), --batch_size={batch_before // replicas} keeps "
                f"the global batch of {batch_before}.")
    return ""


def has_previous_run(dirs: OutputDirs) -> bool:
    return any(tf.io.gfile.exists(path) and tf.io.gfile.listdir(path)
               for path in (dirs.backup, dirs.checkpoints))


def check(dirs: OutputDirs, job_dir: str, settings: dict, replicas: int) -> None:
    """Raises ConfigError when job_dir holds a run (backups or checkpoints) with other
    settings."""
    before = _recorded(job_dir) if has_previous_run(dirs) else None
    if before is None:
        return
    before.pop(RUN_ID_KEY, None)
    differences = _differences(before, settings)
    if differences:
        raise ConfigError(
            f"{job_dir} holds a run with other settings, so it cannot resume: "
            f"{'; '.join(differences)}.{_hint(before, settings, replicas)} Rerun with the "
            "original settings to resume, add --start_over to discard that run and train "
            "from the start, or choose another --job_dir.")


def record(job_dir: str, settings: dict, run_id: str = "") -> None:
    """Writes the settings the job_dir's run trains with, and its run id (the chief does)."""
    tf.io.gfile.makedirs(job_dir)
    with tf.io.gfile.GFile(posixpath.join(job_dir, RUN_RECORD_FILENAME), "w") as f:
        f.write(json.dumps({**settings, RUN_ID_KEY: run_id}, indent=2, sort_keys=True) + "\n")


def _recorded(job_dir: str) -> dict | None:
    path = posixpath.join(job_dir, RUN_RECORD_FILENAME)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def started_by(job_dir: str, run_id: str) -> bool:
    """Whether job_dir's run is the run named run_id (never for an empty id)."""
    recorded = _recorded(job_dir)
    return bool(run_id) and recorded is not None and recorded.get(RUN_ID_KEY) == run_id


def discard_previous_run(dirs: OutputDirs, job_dir: str) -> None:
    """--start_over: deletes the backups, checkpoints, logs, evaluation and exports (the
    feature cache stays: it is keyed by what it holds)."""
    for path in (dirs.backup, dirs.checkpoints, dirs.logs, dirs.eval, dirs.export,
                 dirs.saved_model, posixpath.join(job_dir, RUN_RECORD_FILENAME)):
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path) if tf.io.gfile.isdir(path) else tf.io.gfile.remove(path)
