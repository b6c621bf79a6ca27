"""Resuming: after SIGKILL or SIGTERM the same command finishes the planned steps, and only a
rerun of the same training resumes."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.support.trainer_data import (
    FAST_FLAGS,
    MID_EPOCH_BACKUPS,
    REPO_ROOT,
    balanced_counts,
    run_trainer,
    trainer_command,
    trainer_env,
    write_data_dir,
)
from trainer.training.preemption import EXIT_PREEMPTED

STEPS_PER_EPOCH = 56 // 8
HEAD_EPOCHS, FINE_TUNE_EPOCHS = 1, 3
TOTAL_STEPS = (HEAD_EPOCHS + FINE_TUNE_EPOCHS) * STEPS_PER_EPOCH


def wait_for(path, process, timeout=300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the trainer ended before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_job_killed_while_fine_tuning_resumes_and_ends_at_the_same_step(tmp_path):
    data, job = tmp_path / "records", tmp_path / "job"
    write_data_dir(data, {"train": balanced_counts(8), "validation": balanced_counts(1),
                          "test": balanced_counts(1)}, image_size=32)
    args = (f"--data_dir={data}", f"--job_dir={job}", *FAST_FLAGS, MID_EPOCH_BACKUPS,
            f"--head_epochs={HEAD_EPOCHS}", f"--epochs={FINE_TUNE_EPOCHS}")

    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(trainer_command(*args), cwd=REPO_ROOT, env=trainer_env(),
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(job / "checkpoints/backup/fine_tune/checkpoint", first)
            first.kill()  # SIGKILL: no handler, no cleanup
        finally:
            first.kill()
            first.wait()
    assert not (job / "eval/metrics.json").exists(), "killed too late: the job had finished"

    second = run_trainer(*args)
    assert second.returncode == 0, second.stderr[-4000:]
    resumed = re.search(r"resumed fine_tune phase from backup \S+ at step (\d+) of (\d+)",
                        second.stderr)
    assert resumed, second.stderr[-3000:]
    restored_step = int(resumed.group(1))
    assert 0 < restored_step < FINE_TUNE_EPOCHS * STEPS_PER_EPOCH
    assert "phase head:" not in second.stderr  # the finished head phase is not redone

    training = json.loads((job / "eval/metrics.json").read_text())["training"]
    assert training["total_steps"] == TOTAL_STEPS
    assert training["steps_run_by_last_process"] == (
        FINE_TUNE_EPOCHS * STEPS_PER_EPOCH - restored_step)
    final_backup = (job / "checkpoints/backup/fine_tune/checkpoint").read_text()
    assert f'model_checkpoint_path: "ckpt-{TOTAL_STEPS}"' in final_backup


@pytest.mark.slow
def test_sigterm_saves_a_backup_at_that_step_and_the_rerun_resumes_it(tmp_path):
    """Vertex Spot, GCE maintenance and TPU preemption send SIGTERM: the job saves where it is
    and exits 143; the same command finishes the planned steps."""
    data, job = tmp_path / "records", tmp_path / "job"
    write_data_dir(data, {"train": balanced_counts(8), "validation": balanced_counts(1),
                          "test": balanced_counts(1)}, image_size=32)
    args = (f"--data_dir={data}", f"--job_dir={job}", *FAST_FLAGS, "--backup_every_steps=1000",
            f"--head_epochs={HEAD_EPOCHS}", f"--epochs={FINE_TUNE_EPOCHS}")
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(trainer_command(*args), cwd=REPO_ROOT, env=trainer_env(),
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            # The head phase's epoch-end backup: fine-tuning is starting.
            wait_for(job / "checkpoints/backup/head/checkpoint", first)
            first.send_signal(signal.SIGTERM)
            code = first.wait(timeout=300)
        finally:
            first.kill()
    log_text = (tmp_path / "first.log").read_text()
    assert code == EXIT_PREEMPTED, log_text[-3000:]
    stopped = re.search(r"stopped by SIGTERM: backup saved at step (\d+)", log_text)
    assert stopped, log_text[-3000:]
    step = int(stopped.group(1))
    assert STEPS_PER_EPOCH <= step < TOTAL_STEPS
    phase = "head" if step == STEPS_PER_EPOCH else "fine_tune"
    assert (job / f"checkpoints/backup/{phase}/ckpt-{step}.index").is_file()

    second = run_trainer(*args)
    assert second.returncode == 0, second.stderr[-4000:]
    training = json.loads((job / "eval/metrics.json").read_text())["training"]
    assert training["total_steps"] == TOTAL_STEPS
    assert training["steps_run_by_last_process"] == TOTAL_STEPS - step


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    """(data dir, job dir, its flags without --job_dir) of one short finished run, which
    the tests below copy and rerun instead of each training its own."""
    root = tmp_path_factory.mktemp("finished")
    data, job = root / "records", root / "job"
    write_data_dir(data, {"train": balanced_counts(2), "validation": balanced_counts(1),
                          "test": balanced_counts(1)}, image_size=32, num_shards=1)
    flags = (f"--data_dir={data}", *FAST_FLAGS, "--head_epochs=0", "--epochs=1")
    finished = run_trainer(*flags, f"--job_dir={job}")
    assert finished.returncode == 0, finished.stderr[-3000:]
    return data, job, flags


def copy_of(finished_job, tmp_path):
    """A copy of the finished job in tmp_path: (job dir, the flags that ran it there)."""
    _, job, flags = finished_job
    copy = tmp_path / "job"
    shutil.copytree(job, copy)
    return copy, (*flags, f"--job_dir={copy}")


@pytest.mark.slow
@pytest.mark.parametrize("change, named", [
    ("--fine_tune_learning_rate=1e-3", "--fine_tune_learning_rate: 1e-05 -> 0.001"),
    ("--batch_size=4", "global_batch_size: 8 -> 4"),
])
def test_a_rerun_with_other_settings_is_refused_with_the_differences_named(
        finished_job, tmp_path, change, named):
    job, args = copy_of(finished_job, tmp_path)
    exported = (job / "export/model.keras").stat().st_mtime_ns
    refused = run_trainer(*args, change)
    assert refused.returncode == 2
    assert named in refused.stderr and "--start_over" in refused.stderr, refused.stderr[-2000:]
    assert (job / "export/model.keras").stat().st_mtime_ns == exported  # nothing touched
    again = run_trainer(*args, change, "--start_over")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" not in again.stderr


@pytest.mark.slow
def test_sigterm_while_exporting_keeps_the_previous_export_and_the_rerun_finishes(
        finished_job, tmp_path):
    """The new SavedModel is written beside the old one and swapped in whole: a job stopped
    while exporting exits 143 with one line, the old export still loads, the rerun replaces
    it."""
    job, args = copy_of(finished_job, tmp_path)
    exported = (job / "model/saved_model.pb").stat().st_mtime_ns

    with open(tmp_path / "second.log", "w") as log:
        second = subprocess.Popen(trainer_command(*args), cwd=REPO_ROOT, env=trainer_env(),
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(job / "model.new", second)  # the rerun (nothing left to train) exports
            second.send_signal(signal.SIGTERM)
            code = second.wait(timeout=300)
        finally:
            second.kill()
    log_text = (tmp_path / "second.log").read_text()
    assert code == EXIT_PREEMPTED, log_text[-3000:]
    assert "stopped by SIGTERM outside training" in log_text and "Traceback" not in log_text
    assert (job / "model/saved_model.pb").stat().st_mtime_ns == exported
    check_loads = subprocess.run(
        [sys.executable, "-c", "import sys, tensorflow as tf; tf.saved_model.load(sys.argv[1])",
         str(job / "model")], env=trainer_env(), capture_output=True, text=True, timeout=300)
    assert check_loads.returncode == 0, check_loads.stderr[-2000:]

    third = run_trainer(*args)
    assert third.returncode == 0, third.stderr[-3000:]
    assert (job / "model/saved_model.pb").stat().st_mtime_ns > exported
    assert not (job / "model.new").exists() and not (job / "model.old").exists()
