"""The launcher's own requests executed the way Vertex AI executes them (launch.local_cloud):
what a Spot preemption, a restart with identical arguments and Vertex's output variables do to
the job that `python -m launch train` submits."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from google.cloud import aiplatform_v1
from matplotlib import cbook

from launch.__main__ import main
from launch.endpoint import predict_cli
from launch.local_cloud.buckets import LocalBuckets
from launch.local_cloud.custom_job import SUCCEEDED, LocalCustomJob
from launch.local_cloud.endpoint import LocalEndpoint
from tests.support.trainer_data import (
    FAST_FLAGS,
    MID_EPOCH_BACKUPS,
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
    """launch train -> Vertex AI: --start_over in the job's args acts once: the restart
    resumes, reaching the planned step count with the weights of an uninterrupted job; the
    SavedModel is where Vertex AI puts the model (AIP_MODEL_DIR = <job_dir>/model/), and
    launch deploy's model, served as Vertex AI serves it, answers launch predict as
    `python -m trainer.predict` does."""
    job = launch_train(capsys, "gs://bucket/run", "--spot", "--", *TRAINER_ARGS,
                       MID_EPOCH_BACKUPS, "--start_over")
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

    photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    through_endpoint = predict_through_endpoint(capsys, buckets, tmp_path, photo)
    local = subprocess.run([sys.executable, "-m", "trainer.predict", f"--model={run / 'model'}",
                            "--detector=haar", photo], cwd=REPO_ROOT, env=trainer_env(),
                           capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr[-3000:]
    [expected] = [json.loads(line) for line in local.stdout.splitlines()]
    assert through_endpoint["box"] == expected["box"]
    assert through_endpoint["probabilities"] == pytest.approx(expected["probabilities"],
                                                              abs=1.01e-6)


def predict_through_endpoint(capsys, buckets, tmp_path, photo) -> dict:
    """`launch deploy`'s UploadModel request served as Vertex AI serves it, asked by
    `launch predict` about one photo with one face: that face's line."""
    assert main(["launch", "deploy", "--project=p", "--region=us-central1",
                 "--model=gs://bucket/run/model", "--model_id=emotion", "--endpoint_id=ep",
                 "--dry_run"]) == 0
    requests = json.loads(capsys.readouterr().out)
    upload = aiplatform_v1.UploadModelRequest.from_json(
        json.dumps(requests["uploadModelRequest"]))
    (tmp_path / "endpoint").mkdir()
    endpoint = LocalEndpoint(upload, buckets, tmp_path / "endpoint", base_env=trainer_env(),
                             cwd=REPO_ROOT)
    endpoint.start()
    try:
        flags = predict_cli.define_flags()
        flags(["predict", "--endpoint=ep", "--project=p", "--region=us-central1",
               "--detector=haar"])
        out = io.StringIO()
        assert predict_cli.run(flags, [photo], out=out, client=endpoint) == 0
    finally:
        endpoint.stop()
    assert len(endpoint.requests) == 1
    [line] = [json.loads(line) for line in out.getvalue().splitlines()]
    return line


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


@pytest.mark.slow
def test_launch_preprocess_runs_its_own_argv_as_dataflow_would(capsys, gcs_emulator, gcs_client,
                                                              tmp_path):
    """The launcher's exact pipeline options, on worker processes of their own, reading and
    writing Cloud Storage (the emulator): the records a local DirectRunner run writes."""
    import os

    from beam_preprocess.synthetic import write_csv
    from launch.local_cloud import dataflow

    csv = tmp_path / "fer2013.csv"
    write_csv(str(csv), 300)
    bucket = gcs_client.bucket(gcs_emulator)
    bucket.blob("raw/fer2013.csv").upload_from_filename(csv)
    shards = ("--image_size=48", "--num_shards=2", "--num_eval_shards=1")
    assert main(["launch", "preprocess", "--project=p", "--region=us-central1",
                 f"--input=gs://{gcs_emulator}/raw/fer2013.csv",
                 f"--output_dir=gs://{gcs_emulator}/records", "--dry_run", *shards]) == 0
    argv = json.loads(capsys.readouterr().out)["argv"]
    assert "--runner=DataflowRunner" in argv
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    on_dataflow = dataflow.run(argv, env, cwd=REPO_ROOT)
    assert on_dataflow.returncode == 0, on_dataflow.stderr[-3000:]

    local = tmp_path / "records"
    here = subprocess.run([sys.executable, "-m", "beam_preprocess", "--runner=DirectRunner",
                           f"--input={csv}", f"--output_dir={local}", *shards], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert here.returncode == 0, here.stderr[-3000:]
    manifest = json.loads(bucket.blob("records/manifest.json").download_as_bytes())
    assert manifest["splits"] == json.loads((local / "manifest.json").read_text())["splits"]
    for shard in local.glob("*.tfrecord"):
        assert bucket.blob(f"records/{shard.name}").download_as_bytes() == shard.read_bytes()
    staged = [b.name for b in gcs_client.list_blobs(gcs_emulator, prefix="records/.staging/")]
    assert not [name for name in staged if not name.endswith("/")]  # committed, cleaned up
