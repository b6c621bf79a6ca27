"""What a job keeps on disk while it trains: resumable backups, and last/best weights.

Backups are tf.train.Checkpoint state (model, optimizer, step counter, best score, plateau
state) saved every --backup_every_steps steps and at each epoch end, one directory per phase.
A job killed at any moment and restarted with the same command restores the newest backup and
continues from that step: unlike Keras' BackupAndRestore, which restarts the interrupted epoch
from batch 0, nothing already trained after the last save is lost except the steps since it.

Under MultiWorkerMirroredStrategy every worker saves (saving can need collective ops), the chief
into the real directory and the others into their own temporary directories, deleted after each
save (the tf.distribute multi-worker convention). All workers restore from the chief's.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile

import keras
import tensorflow as tf

from trainer.training.output_dirs import worker_temp_dir
from trainer.training.strategy import Task

LAST_WEIGHTS = "last.weights.h5"
BEST_WEIGHTS = "best.weights.h5"
BEST_INFO = "best.json"


def phase_backup_dir(backup_root: str, phase: str) -> str:
    return posixpath.join(backup_root, phase)


def has_backup(backup_root: str, phase: str) -> bool:
    return tf.train.latest_checkpoint(phase_backup_dir(backup_root, phase)) is not None


class PhaseBackup:
    """The resumable state of one training phase."""

    def __init__(self, backup_root: str, phase: str, task: Task, **trackables):
        self._directory = phase_backup_dir(backup_root, phase)
        self._write_dir = (self._directory if task.is_chief
                           else worker_temp_dir(self._directory, task.task_id))
        self._is_chief = task.is_chief
        self._checkpoint = tf.train.Checkpoint(**trackables)
        self._manager = tf.train.CheckpointManager(self._checkpoint, self._write_dir,
                                                   max_to_keep=1)

    def restore(self) -> str | None:
        """Restores the newest backup, if any; returns its path."""
        latest = tf.train.latest_checkpoint(self._directory)
        if latest is not None:
            self._checkpoint.restore(latest).assert_existing_objects_matched()
        return latest

    def save(self, step: int) -> None:
        self._manager.save(checkpoint_number=step)
        if not self._is_chief:
            tf.io.gfile.rmtree(self._write_dir)


def save_weights(model: keras.Model, path: str) -> None:
    """model.save_weights to a local or gs:// path, replaced whole (never half-written)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, posixpath.basename(path))
        model.save_weights(local)
        tf.io.gfile.makedirs(posixpath.dirname(path))
        tf.io.gfile.copy(local, path + ".tmp", overwrite=True)
        tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def load_weights(model: keras.Model, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, posixpath.basename(path))
        tf.io.gfile.copy(path, local)
        model.load_weights(local)


def write_best_info(checkpoint_dir: str, info: dict) -> None:
    with tf.io.gfile.GFile(posixpath.join(checkpoint_dir, BEST_INFO), "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
