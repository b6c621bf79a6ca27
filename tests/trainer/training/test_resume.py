"""A job killed with SIGKILL during fine-tuning resumes when rerun with the same command."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.support.trainer_data import (
    FAST_FLAGS,
    REPO_ROOT,
    balanced_counts,
    run_trainer,
    trainer_command,
    trainer_env,
    write_data_dir,
)

STEPS_PER_EPOCH = 56 // 8
HEAD_EPOCHS, FINE_TUNE_EPOCHS = 1, 3
TOTAL_STEPS = (HEAD_EPOCHS + FINE_TUNE_EPOCHS) * STEPS_PER_EPOCH


def wait_for(path, process, timeout=300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the trainer ended before fine-tuning saved a backup"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout}s"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_job_killed_while_fine_tuning_resumes_and_ends_at_the_same_step(tmp_path):
    data, job = tmp_path / "records", tmp_path / "job"
    write_data_dir(data, {"train": balanced_counts(8), "validation": balanced_counts(1),
                          "test": balanced_counts(1)}, image_size=32)
    args = (f"--data_dir={data}", f"--job_dir={job}", *FAST_FLAGS,
            f"--head_epochs={HEAD_EPOCHS}", f"--epochs={FINE_TUNE_EPOCHS}")

    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(trainer_command(*args), cwd=REPO_ROOT, env=trainer_env(),
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(job / "backup/fine_tune/checkpoint", first)
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
    final_backup = (job / "backup/fine_tune/checkpoint").read_text()
    assert f'model_checkpoint_path: "ckpt-{TOTAL_STEPS}"' in final_backup
