"""The launcher's own requests executed the way Vertex AI executes them (launch.local_cloud):
what a Spot preemption, a restart with identical arguments and Vertex's output variables do to
the job that `python -m launch train` submits."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from google.cloud import aiplatform_v1

from launch.__main__ import main
from launch.local_cloud.buckets import LocalBuckets
from launch.local_cloud.custom_job import SUCCEEDED, LocalCustomJob
from tests.support.trainer_data import (
    FAST_FLAGS,
    REPO_ROOT,
    balanced_counts,
    trainer_env,
    write_data_dir,
)

STEPS_PER_EPOCH = 56 // 8
HEAD_EPOCHS, FINE_TUNE_EPOCHS = 1, 3
TOTAL_STEPS = (HEAD_EPOCHS + FINE_TUNE_EPOCHS) * STEPS_PER_EPOCH
TRAINER_ARGS = (*FAST_FLAGS, "--dropout=0", f"--head_epochs={HEAD_EPOCHS}",
                f"--epochs={FINE_TUNE_EPOCHS}")


def launch_train(capsys, job_dir: str, *args: str) -> aiplatform_v1.CustomJob:
    """The CustomJob `launch train` would create: its --dry_run output, parsed back."""
    code = main(["launch", "train", "--project=p", "--region=us-central1",
                 "--data_dir=gs://bucket/records", f"--job_dir={job_dir}",
                 "--container_image=local/trainer:{version}", "--dry_run", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return aiplatform_v1.CreateCustomJobRequest.from_json(out).custom_job


@pytest.fixture
def buckets(tmp_path) -> LocalBuckets:
    buckets = LocalBuckets(tmp_path / "gcs")
    write_data_dir(buckets.path("gs://bucket/records"), {
        "train": balanced_counts(8), "validation": balanced_counts(1),
        "test": balanced_counts(1)}, image_size=32)
    return buckets


def run_job(job, buckets, logs) -> LocalCustomJob:
    local = LocalCustomJob(job, buckets, logs, base_env=trainer_env(), cwd=REPO_ROOT,
                           grace_seconds=120)
    local.start()
    return local


def weights(path) -> list[np.ndarray]:
    found = []
    with h5py.File(path) as f:
        f.visititems(lambda _, item: found.append(item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return found


@pytest.mark.slow
def test_a_spot_job_preempted_and_restarted_with_identical_args_ends_as_an_unbroken_one(
        capsys, buckets, tmp_path):
    """--start_over in the job's args acts once: the restart resumes, reaching the planned step
    count with the weights of an uninterrupted job; the SavedModel is where Vertex AI puts the
    model (AIP_MODEL_DIR = <job_dir>/model/)."""
    job = launch_train(capsys, "gs://bucket/run", "--spot", "--", *TRAINER_ARGS,
                       "--start_over")
    [pool] = job.job_spec.worker_pool_specs
    [run_id] = [a.split("=", 1)[1] for a in pool.container_spec.args if a.startswith("--run_id")]
    run = buckets.path("gs://bucket/run")
    run.mkdir(parents=True)
    preempted = run_job(job, buckets, tmp_path / "logs")
    # Vertex's AIP_CHECKPOINT_DIR is <job_dir>/checkpoints/: backups go below it.
    preempted.wait_until(lambda: (run / "checkpoints/backup/fine_tune/checkpoint").exists(), 600)
    preempted.preempt()
    outcome = preempted.wait()
    log = preempted.replica("workerpool0-0").log()
    assert outcome.state == SUCCEEDED and outcome.restarts == 1, log[-3000:]
    first, second = preempted.replica("workerpool0-0").commands_run
    assert first == second  # Vertex restarts with the same arguments
    assert "stopped by SIGTERM: backup saved at step" in log
    assert f"run {run_id} started over already: resuming it" in log

    training = json.loads((run / "eval/metrics.json").read_text())["training"]
    assert training["total_steps"] == TOTAL_STEPS
    assert training["resumed_from"] is not None
    assert 0 < training["steps_run_by_last_process"] < TOTAL_STEPS
    assert json.loads((run / "run.json").read_text())["run_id"] == run_id
    assert (run / "model/saved_model.pb").is_file()  # AIP_MODEL_DIR

    straight_job = launch_train(capsys, "gs://bucket/straight", "--", *TRAINER_ARGS)
    straight = run_job(straight_job, buckets, tmp_path / "straight_logs")
    assert straight.wait().state == SUCCEEDED
    last = "checkpoints/last.weights.h5"
    resumed, unbroken = weights(run / last), weights(buckets.path("gs://bucket/straight") / last)
    assert len(unbroken) > 100  # the network's weights, not an empty file
    for a, b in zip(resumed, unbroken, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_a_deliberate_start_over_is_a_new_submission_with_a_new_run_id(capsys):
    args = ("--display_name=run1", "--", *TRAINER_ARGS, "--start_over")
    ids = [[a for a in launch_train(capsys, "gs://bucket/run", *args).job_spec
            .worker_pool_specs[0].container_spec.args if a.startswith("--run_id=")]
           for _ in range(2)]
    assert len(ids[0]) == len(ids[1]) == 1 and ids[0] != ids[1]
    assert ids[0][0].startswith("--run_id=run1-")
    without = launch_train(capsys, "gs://bucket/run", "--", *TRAINER_ARGS)
    assert not any(a.startswith("--run_id") for a in
                   without.job_spec.worker_pool_specs[0].container_spec.args)


@pytest.mark.parametrize("trainer_args, named", [
    (["--fine_tune_learing_rate=1e-3"], "Unknown command line flag 'fine_tune_learing_rate'"),
    (["--epochs=many"], "flag --epochs=many"),
    (["--batch_size=0"], "--batch_size must be >= 1"),
])
def test_trainer_flags_are_checked_before_anything_is_submitted(capsys, trainer_args, named):
    code = main(["launch", "train", "--project=p", "--region=us-central1",
                 "--data_dir=gs://bucket/records", "--job_dir=gs://bucket/run",
                 "--container_image=local/trainer:1", "--", *trainer_args])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert named in captured.err and "trainer flags" in captured.err, captured.err
    assert "Traceback" not in captured.err
