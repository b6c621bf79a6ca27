"""launch.local_cloud.custom_job itself: the environment, restarts, failures and timeout it
gives a CustomJob's replicas, checked with a small script in place of the trainer."""

from __future__ import annotations

import json
import sys

import pytest
from google.cloud import aiplatform_v1
from google.protobuf import duration_pb2

from launch.local_cloud.buckets import LocalBuckets
from launch.local_cloud.custom_job import FAILED, SUCCEEDED, LocalCustomJob

# Records its environment under a name of its own, then waits for the file `go` (or fails).
REPLICA = """
import json, os, pathlib, sys, time
out = pathlib.Path(sys.argv[1])
task = json.loads(os.environ.get("CLUSTER_SPEC", '{"task": {"type": "single", "index": 0}}'))
name = f"{task['task']['type']}-{task['task']['index']}"
starts = len(list(out.glob(name + ".*.json")))
keys = ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR", "TF_CONFIG",
        "CLUSTER_SPEC", "GOOGLE_APPLICATION_CREDENTIALS")
(out / f"{name}.{starts}.json").write_text(json.dumps({k: os.environ.get(k) for k in keys}))
while not (out / "go").exists():
    time.sleep(0.02)
sys.exit(int((out / "go").read_text() or 0))
"""


def custom_job(out, workers=0, restart_together=False, timeout_seconds=None):
    container = aiplatform_v1.ContainerSpec(image_uri="local/replica",
                                            command=["python", "-c", REPLICA], args=[str(out)])
    pools = [aiplatform_v1.WorkerPoolSpec(replica_count=1, container_spec=container)]
    if workers:
        pools.append(aiplatform_v1.WorkerPoolSpec(replica_count=workers,
                                                  container_spec=container))
    scheduling = aiplatform_v1.Scheduling(restart_job_on_worker_restart=restart_together)
    if timeout_seconds:
        scheduling.timeout = duration_pb2.Duration(seconds=timeout_seconds)
    return aiplatform_v1.CustomJob(display_name="t", job_spec=aiplatform_v1.CustomJobSpec(
        worker_pool_specs=pools, scheduling=scheduling,
        base_output_directory=aiplatform_v1.GcsDestination(output_uri_prefix="gs://b/run")))


def started(out, name, count=1) -> list[dict]:
    return [json.loads((out / f"{name}.{i}.json").read_text()) for i in range(count)]


def run(job, tmp_path, **env) -> LocalCustomJob:
    local = LocalCustomJob(job, LocalBuckets(tmp_path / "gcs"), tmp_path / "logs",
                           base_env={"PATH": "", "GOOGLE_APPLICATION_CREDENTIALS": "/key.json",
                                     **env}, grace_seconds=5)
    local.start()
    return local


def test_replicas_get_vertex_ais_environment_and_the_job_succeeds(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    job = run(custom_job(out, workers=1), tmp_path)
    job.wait_until(lambda: len(list(out.glob("*.json"))) == 2, 60)
    (out / "go").write_text("0")
    assert job.wait().state == SUCCEEDED
    [chief], [worker] = started(out, "workerpool0-0"), started(out, "workerpool1-0")
    bucket = tmp_path / "gcs" / "b" / "run"
    assert chief["AIP_MODEL_DIR"] == f"{bucket}/model/"
    assert chief["AIP_CHECKPOINT_DIR"] == f"{bucket}/checkpoints/"
    assert chief["AIP_TENSORBOARD_LOG_DIR"] == f"{bucket}/logs/"
    assert chief["GOOGLE_APPLICATION_CREDENTIALS"] is None  # the job's account, not yours
    chief_config, worker_config = json.loads(chief["TF_CONFIG"]), json.loads(worker["TF_CONFIG"])
    assert chief_config["cluster"] == worker_config["cluster"]
    assert set(chief_config["cluster"]) == {"chief", "worker"}
    assert chief_config["task"] == {"type": "chief", "index": 0}
    assert worker_config["task"] == {"type": "worker", "index": 0}
    assert set(json.loads(chief["CLUSTER_SPEC"])["cluster"]) == {"workerpool0", "workerpool1"}


def test_a_single_replica_gets_no_cluster(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    job = run(custom_job(out), tmp_path)
    job.wait_until(lambda: (out / "single-0.0.json").exists(), 60)
    (out / "go").write_text("0")
    assert job.wait().state == SUCCEEDED
    [alone] = started(out, "single-0")
    assert alone["TF_CONFIG"] is None and alone["CLUSTER_SPEC"] is None


@pytest.mark.parametrize("restart_together, chief_starts", [(False, 1), (True, 2)])
def test_a_worker_restart_restarts_it_alone_or_the_whole_job(tmp_path, restart_together,
                                                            chief_starts):
    out = tmp_path / "out"
    out.mkdir()
    job = run(custom_job(out, workers=1, restart_together=restart_together), tmp_path)
    job.wait_until(lambda: len(list(out.glob("*.json"))) == 2, 60)
    job.kill_replica("workerpool1-0")
    job.wait_until(lambda: (out / "workerpool1-0.1.json").exists(), 60)
    if restart_together:
        job.wait_until(lambda: (out / "workerpool0-0.1.json").exists(), 60)
    (out / "go").write_text("0")
    assert job.wait().state == SUCCEEDED
    assert len(job.replica("workerpool0-0").commands_run) == chief_starts
    assert len(job.replica("workerpool1-0").commands_run) == 2
    assert job.replica("workerpool1-0").commands_run[0] == job.replica(
        "workerpool1-0").commands_run[1]


def test_a_replica_that_fails_fails_the_job(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    job = run(custom_job(out, workers=1), tmp_path)
    job.wait_until(lambda: len(list(out.glob("*.json"))) == 2, 60)
    (out / "go").write_text("3")
    outcome = job.wait()
    assert outcome.state == FAILED
    assert "exited with a non-zero status of 3" in outcome.error


def test_the_jobs_timeout_stops_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    job = run(custom_job(out, timeout_seconds=2), tmp_path)
    outcome = job.wait()
    assert outcome.state == FAILED and "past its timeout of 2 s" in outcome.error
    assert job.replica("workerpool0-0").process.poll() is not None


def test_the_stand_in_runs_as_a_command(tmp_path):
    import subprocess

    out = tmp_path / "out"
    out.mkdir()
    (out / "go").write_text("0")
    request = aiplatform_v1.CreateCustomJobRequest(parent="projects/p/locations/l",
                                                   custom_job=custom_job(out))
    (tmp_path / "job.json").write_text(aiplatform_v1.CreateCustomJobRequest.to_json(request))
    done = subprocess.run([sys.executable, "-m", "launch.local_cloud.custom_job",
                           str(tmp_path / "job.json"), "--bucket_root", str(tmp_path / "gcs"),
                           "--log_dir", str(tmp_path / "logs")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(SUCCEEDED)
