"""What a job keeps on disk while it trains: resumable backups, and last/best weights.

Backups are tf.train.Checkpoint state (model, optimizer, step counter, best score, plateau
state) saved every --backup_every_steps steps or --backup_every_minutes, at each epoch end and
on SIGTERM, one directory per phase. A job killed at any moment and restarted with the same
command restores the newest backup and continues from that step: unlike Keras'
BackupAndRestore, which restarts the interrupted epoch from batch 0, nothing already trained is
lost but the steps since the last save.

The chief writes asynchronously (TensorFlow copies the variables, then writes while training
goes on), so a backup of the whole network and its optimizer slots does not stall an
accelerator; `wait()` blocks until the last one is on disk. Under MultiWorkerMirroredStrategy
every worker saves (saving can need collective ops), the others into temporary directories on
their local disk, deleted after each save (the tf.distribute multi-worker convention, without
uploading a copy). All workers restore from the chief's.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile

import keras
import tensorflow as tf

from trainer.training.strategy import Task

LAST_WEIGHTS = "last.weights.h5"
BEST_WEIGHTS = "best.weights.h5"
BEST_INFO = "best.json"


def _copy_keras_variable_to_cpu(variable, object_map):
    """The host copy of a Keras variable for an async checkpoint is that of its tf.Variable.

    Keras 3.15's own version creates a new tf.Variable on every call, inside TensorFlow's
    tf.function that copies the variables to the host, so the first async save fails
    ("tf.function only supports singleton tf.Variables created on the first call").
    """
    variable.value._copy_trackable_to_cpu(object_map)
    object_map[variable] = object_map[variable.value]


def enable_async_checkpoints() -> None:
    from keras.src.backend.tensorflow import core

    core.Variable._copy_trackable_to_cpu = _copy_keras_variable_to_cpu


def phase_backup_dir(backup_root: str, phase: str) -> str:
    return posixpath.join(backup_root, phase)


def has_backup(backup_root: str, phase: str) -> bool:
    return tf.train.latest_checkpoint(phase_backup_dir(backup_root, phase)) is not None


class PhaseBackup:
    """The resumable state of one training phase."""

    def __init__(self, backup_root: str, phase: str, task: Task, **trackables):
        self._directory = phase_backup_dir(backup_root, phase)
        self._is_chief = task.is_chief
        self._write_dir = (self._directory if task.is_chief
                           else tempfile.mkdtemp(prefix=f"backup-worker{task.task_id}-"))
        self._checkpoint = tf.train.Checkpoint(**trackables)
        self._manager = tf.train.CheckpointManager(self._checkpoint, self._write_dir,
                                                   max_to_keep=1)
        if task.is_chief:
            enable_async_checkpoints()
        self._options = tf.train.CheckpointOptions(enable_async=task.is_chief)

    def restore(self) -> str | None:
        """Restores the newest backup, if any; returns its path."""
        latest = tf.train.latest_checkpoint(self._directory)
        if latest is not None:
            self._checkpoint.restore(latest).assert_existing_objects_matched()
        return latest

    def save(self, step: int) -> None:
        self._manager.save(checkpoint_number=step, options=self._options)
        if not self._is_chief:
            tf.io.gfile.rmtree(self._write_dir)

    def wait(self) -> None:
        """Returns when every backup started is written."""
        self._checkpoint.sync()


def save_weights(model: keras.Model, path: str) -> None:
    """model.save_weights to a local or gs:// path, replaced whole (never half-written)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, posixpath.basename(path))
        model.save_weights(local)
        copy_file(local, path)


def copy_file(source: str, path: str) -> None:
    """Copies a local or gs:// file to a local or gs:// path, replaced whole."""
    tf.io.gfile.makedirs(posixpath.dirname(path))
    tf.io.gfile.copy(source, path + ".tmp", overwrite=True)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def load_weights(model: keras.Model, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, posixpath.basename(path))
        tf.io.gfile.copy(path, local)
        model.load_weights(local)


def write_best_info(checkpoint_dir: str, info: dict) -> None:
    with tf.io.gfile.GFile(posixpath.join(checkpoint_dir, BEST_INFO), "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
