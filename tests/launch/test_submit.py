"""Submitting a training job: our sdist to (emulated) GCS, the CustomJob to a recording fake of
Vertex AI's JobServiceClient, and what the user reads when something is wrong."""

import json
import os
import subprocess
import sys
import tarfile

import pytest
from google.api_core import exceptions
from google.cloud import aiplatform_v1

from launch.common import package
from launch.common.errors import LaunchError
from launch.train import request as train_request
from launch.train import submit as train_submit
from tests.conftest import REPO_ROOT

JOB_NAME = "projects/123456/locations/us-central1/customJobs/987"
# A prebuilt-style image whose Python fits our python_requires (Vertex AI has none yet).
PY311_IMAGE = "us-docker.pkg.dev/vertex-ai/training/tf-gpu.2-21.py311:latest"


class RecordingJobClient:
    """Stands in for aiplatform_v1.JobServiceClient: records requests, replays job states."""

    def __init__(self, states=(), error=None):
        self.created = []
        self.polled = []
        self._states = list(states)
        self._error = error

    def create_custom_job(self, *, parent, custom_job):
        if self._error:
            raise self._error
        self.created.append((parent, custom_job))
        job = aiplatform_v1.CustomJob(custom_job)
        job.name = JOB_NAME
        job.state = aiplatform_v1.JobState.JOB_STATE_PENDING
        return job

    def get_custom_job(self, *, name):
        self.polled.append(name)
        return aiplatform_v1.CustomJob(name=name, state=self._states.pop(0))


def gpu_spec(bucket: str, **changes) -> train_request.TrainingSpec:
    settings = dict(
        project="my-project", region="us-central1", display_name="run1",
        data_dir=f"gs://{bucket}/records", job_dir=f"gs://{bucket}/runs/run1",
        hardware=train_request.Hardware("n1-standard-8", "NVIDIA_TESLA_T4", 1),
        trainer_args=("--epochs=2",), executor_image_uri=PY311_IMAGE)
    settings.update(changes)
    return train_request.TrainingSpec(**settings)


def test_submission_uploads_our_sdist_and_creates_the_exact_job(gcs_emulator, gcs_client,
                                                                tmp_path):
    client, lines = RecordingJobClient(), []
    job = train_submit.submit_training(
        gpu_spec(gcs_emulator), f"gs://{gcs_emulator}/staging",
        storage_client=gcs_client, job_client=client, echo=lines.append)

    package_uri = f"gs://{gcs_emulator}/staging/run1/vggface_emotion-0.1.0.tar.gz"
    [(parent, custom_job)] = client.created
    assert parent == "projects/my-project/locations/us-central1"
    assert json.loads(aiplatform_v1.CustomJob.to_json(
        custom_job, use_integers_for_enums=False,
        always_print_fields_with_no_presence=False)) == {
        "displayName": "run1",
        "jobSpec": {
            "workerPoolSpecs": [{
                "machineSpec": {"machineType": "n1-standard-8",
                                "acceleratorType": "NVIDIA_TESLA_T4", "acceleratorCount": 1},
                "replicaCount": "1",
                "pythonPackageSpec": {
                    "executorImageUri": PY311_IMAGE,
                    "packageUris": [package_uri],
                    "pythonModule": "trainer",
                    "args": [f"--data_dir=gs://{gcs_emulator}/records",
                             f"--job_dir=gs://{gcs_emulator}/runs/run1", "--epochs=2"],
                },
            }],
            "baseOutputDirectory": {"outputUriPrefix": f"gs://{gcs_emulator}/runs/run1"},
        },
    }
    assert job.name == JOB_NAME
    assert f"Created Vertex AI custom job {JOB_NAME}" in lines
    assert ("Console: https://console.cloud.google.com/agent-platform/locations/us-central1/"
            "training/987?project=123456") in lines

    sdist = tmp_path / "uploaded.tar.gz"
    gcs_client.bucket(gcs_emulator).blob("staging/run1/vggface_emotion-0.1.0.tar.gz") \
        .download_to_filename(str(sdist))
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"setup.py", "trainer/__init__.py", "beam_preprocess/record_format.py",
            "launch/train/request.py"} <= names


def test_custom_container_job_uploads_nothing(gcs_emulator, gcs_client):
    client = RecordingJobClient()
    spec = gpu_spec(gcs_emulator, display_name="container-run",
                    container_image="us-central1-docker.pkg.dev/my-project/ml/trainer:3")
    train_submit.submit_training(spec, f"gs://{gcs_emulator}/staging",
                                  storage_client=gcs_client, job_client=client, echo=print)
    [(_, custom_job)] = client.created
    assert custom_job.job_spec.worker_pool_specs[0].container_spec.image_uri.endswith("trainer:3")
    assert not list(gcs_client.bucket(gcs_emulator).list_blobs(prefix="staging/container-run"))


def test_python_mismatch_stops_before_upload_or_job(gcs_emulator, gcs_client):
    client = RecordingJobClient()
    spec = gpu_spec(gcs_emulator, display_name="py310-run", executor_image_uri=None)
    with pytest.raises(LaunchError, match=r"runs Python 3\.10, but this package requires"):
        train_submit.submit_training(spec, f"gs://{gcs_emulator}/staging",
                                      storage_client=gcs_client, job_client=client)
    assert client.created == []
    assert not list(gcs_client.bucket(gcs_emulator).list_blobs(prefix="staging/py310-run"))


def test_refused_job_creation_says_what_to_check(gcs_emulator, gcs_client):
    refusal = exceptions.PermissionDenied(
        "Vertex AI API has not been used in project 123456 before or it is disabled.")
    with pytest.raises(LaunchError) as raised:
        train_submit.submit_training(
            gpu_spec(gcs_emulator), f"gs://{gcs_emulator}/staging", storage_client=gcs_client,
            job_client=RecordingJobClient(error=refusal), echo=print)
    message = str(raised.value)
    assert "permission denied: Vertex AI API has not been used in project 123456" in message
    assert "gcloud services enable aiplatform.googleapis.com" in message


def test_missing_staging_bucket_is_named(gcs_emulator, gcs_client):
    with pytest.raises(LaunchError, match=r"(?s)gs://no-such-bucket/staging/run1/.*not found.*"
                       r"gcloud storage buckets create gs://no-such-bucket"):
        train_submit.submit_training(
            gpu_spec(gcs_emulator), "gs://no-such-bucket/staging", storage_client=gcs_client,
            job_client=RecordingJobClient(), echo=print)


def test_wait_polls_until_the_job_ends():
    states = aiplatform_v1.JobState
    client = RecordingJobClient(states=[states.JOB_STATE_QUEUED, states.JOB_STATE_RUNNING,
                                        states.JOB_STATE_RUNNING, states.JOB_STATE_FAILED])
    sleeps, lines = [], []
    job = train_submit.wait_for_job(client, JOB_NAME, 30, sleep=sleeps.append,
                                     echo=lines.append)
    assert job.state == states.JOB_STATE_FAILED
    assert lines == ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_FAILED"]
    assert sleeps == [30, 30, 30]
    assert client.polled == [JOB_NAME] * 4


def test_missing_credentials_say_how_to_log_in():
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")}
    env.update(CLOUDSDK_CONFIG="/nonexistent-gcloud-config", NO_GCE_CHECK="True")
    result = subprocess.run(
        [sys.executable, "-m", "launch", "train", "--project=p", "--region=us-central1",
         "--data_dir=gs://b/records", "--job_dir=gs://b/runs/1",
         "--flagfile=configs/hardware/vertex_gpu.cfg"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "No Google Cloud credentials found" in result.stderr
    assert "gcloud auth application-default login" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_uploaded_sdist_installs_and_runs_the_trainer(gcs_emulator, gcs_client, tmp_path):
    """What Vertex AI does with our package: fetch it, pip-install it, `python -m trainer`.

    Installed without dependencies into a target dir (they are in this environment already) and
    run from outside the repository, so only the sdist's copy of our code can be imported.
    """
    uri = f"gs://{gcs_emulator}/staging/install-test/vggface_emotion-0.1.0.tar.gz"
    package.upload(gcs_client, package.build_sdist(tmp_path / "dist"), uri)
    downloaded = tmp_path / "vggface_emotion-0.1.0.tar.gz"
    gcs_client.bucket(gcs_emulator).blob(uri.split("/", 3)[3]).download_to_filename(
        str(downloaded))
    target, workdir = tmp_path / "site", tmp_path / "elsewhere"
    workdir.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(downloaded)],
        check=True, cwd=workdir, timeout=300)
    assert {"trainer", "beam_preprocess", "launch"} <= {p.name for p in target.iterdir()}

    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import trainer; print(trainer.__file__)"],
        cwd=workdir, env=env, capture_output=True, text=True, check=True, timeout=120)
    assert where.stdout.startswith(str(target))
    # absl prints the help and exits with status 1; the text shows the entry module ran.
    result = subprocess.run([sys.executable, "-m", "trainer", "--helpfull"], cwd=workdir,
                            env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "python -m trainer --data_dir DIR --job_dir DIR" in result.stdout
    assert "trainer.config:" in result.stdout and "--data_dir" in result.stdout
