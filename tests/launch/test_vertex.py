"""`python -m launch train --dry_run`: the Vertex AI CustomJob request for each config."""

import json
from pathlib import Path

import pytest

from launch.__main__ import main
from tests.conftest import REPO_ROOT

REQUIRED = ["--project=my-project", "--region=us-central1",
            "--data_dir=gs://fer-bucket/records", "--job_dir=gs://fer-bucket/runs/run1",
            "--display_name=run1"]
PACKAGE_URI = "gs://fer-bucket/staging/run1/vggface_emotion-0.1.0.tar.gz"
IMAGES = "us-docker.pkg.dev/vertex-ai/training"
# What `python -m launch image --project=my-project --region=us-central1` pushes.
OUR_IMAGES = "us-central1-docker.pkg.dev/my-project/vggface-emotion"
GPU_IMAGE = f"{OUR_IMAGES}/trainer-gpu:0.1.0"
TPU_IMAGE = f"{OUR_IMAGES}/trainer-tpu:0.1.0"
PREBUILT_PY310 = f"{IMAGES}/tf-gpu.2-17.py310:latest"
VERTEX_CONFIGS = sorted(p.name for p in (REPO_ROOT / "configs/hardware").glob("vertex_*.cfg"))
BASE_ARGS = ["--data_dir=gs://fer-bucket/records", "--job_dir=gs://fer-bucket/runs/run1"]


def dry_run(capsys, *args) -> dict:
    assert main(["launch", "train", *REQUIRED, "--dry_run", *args]) == 0
    captured = capsys.readouterr()
    request = json.loads(captured.out)
    assert request["parent"] == "projects/my-project/locations/us-central1"
    return request["customJob"]


def pools(job: dict) -> list[dict]:
    return job["jobSpec"]["workerPoolSpecs"]


def error_of(capsys, *args) -> str:
    assert main(["launch", "train", *args]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    return captured.err


def test_gpu_config(capsys):
    job = dry_run(capsys, "--flagfile=configs/hardware/vertex_gpu.cfg", "--", "--epochs=2")
    assert job["displayName"] == "run1"
    assert job["jobSpec"]["baseOutputDirectory"] == {
        "outputUriPrefix": "gs://fer-bucket/runs/run1"}
    [chief] = pools(job)
    assert chief["machineSpec"] == {"machineType": "n1-standard-8",
                                    "acceleratorType": "NVIDIA_TESLA_T4", "acceleratorCount": 1}
    assert chief["replicaCount"] == "1"
    assert chief["containerSpec"] == {  # the image `launch image` pushes, placeholders filled
        "imageUri": GPU_IMAGE,
        "command": ["python", "-m", "trainer"],
        "args": [*BASE_ARGS, "--mixed_precision=auto", "--epochs=2"],
    }
    assert "pythonPackageSpec" not in chief
    assert "scheduling" not in job["jobSpec"]  # one replica: nothing to restart together


def test_multiworker_config_has_a_chief_and_workers(capsys):
    job = dry_run(capsys, "--flagfile=configs/hardware/vertex_multiworker.cfg")
    chief, workers = pools(job)
    assert (chief["replicaCount"], workers["replicaCount"]) == ("1", "2")
    for pool in (chief, workers):
        assert pool["machineSpec"] == {"machineType": "n1-standard-8",
                                       "acceleratorType": "NVIDIA_TESLA_T4",
                                       "acceleratorCount": 1}
        assert pool["containerSpec"] == {
            "imageUri": GPU_IMAGE,
            "command": ["python", "-m", "trainer"],
            "args": [*BASE_ARGS, "--strategy=multi_worker_mirrored",
                     "--collective_timeout_seconds=600", "--mixed_precision=auto"],
        }
    # Every replica restarts (and resumes from the backup) when one does.
    assert job["jobSpec"]["scheduling"] == {"restartJobOnWorkerRestart": True}


def test_tpu_config(capsys):
    job = dry_run(capsys, "--flagfile=configs/hardware/vertex_tpu.cfg")
    [host] = pools(job)
    assert host["machineSpec"] == {"machineType": "cloud-tpu", "acceleratorType": "TPU_V3",
                                   "acceleratorCount": 8}
    assert host["containerSpec"] == {
        "imageUri": TPU_IMAGE,
        "command": ["python", "-m", "trainer"],
        "args": [*BASE_ARGS, "--strategy=tpu", "--mixed_precision=auto"],
    }


@pytest.mark.parametrize("config", VERTEX_CONFIGS)
def test_every_shipped_config_dry_runs_without_a_warning(capsys, config):
    """The configs run as shipped once `launch image` has built the images."""
    assert main(["launch", "train", *REQUIRED, f"--flagfile=configs/hardware/{config}",
                 "--dry_run"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    [image] = {pool["containerSpec"]["imageUri"] for pool in pools(json.loads(
        captured.out)["customJob"])}
    assert image in (GPU_IMAGE, TPU_IMAGE)
    assert "{" not in Path(image).name and image.startswith(OUR_IMAGES + "/")


def test_shipped_configs_are_all_tested():
    assert VERTEX_CONFIGS == ["vertex_gpu.cfg", "vertex_multiworker.cfg", "vertex_tpu.cfg"]


def test_without_flags_runs_our_image_from_the_region_registry(capsys):
    assert main(["launch", "train", *REQUIRED, "--region=europe-west4", "--dry_run"]) == 0
    captured = capsys.readouterr()
    [chief] = pools(json.loads(captured.out)["customJob"])
    assert chief["machineSpec"] == {"machineType": "n1-standard-8"}
    assert chief["containerSpec"]["imageUri"] == (
        "europe-west4-docker.pkg.dev/my-project/vggface-emotion/trainer-gpu:0.1.0")
    assert captured.err == ""


def test_a_prebuilt_executor_image_runs_our_sdist(capsys):
    py311 = f"{IMAGES}/tf-gpu.2-21.py311:latest"  # what Vertex AI would have to ship
    job = dry_run(capsys, f"--executor_image_uri={py311}")
    [chief] = pools(job)
    assert "containerSpec" not in chief
    assert chief["pythonPackageSpec"] == {"executorImageUri": py311,
                                          "packageUris": [PACKAGE_URI],
                                          "pythonModule": "trainer", "args": BASE_ARGS}


def test_trainer_flags_and_their_flagfiles_pass_through(capsys, tmp_path):
    trainer_flags = tmp_path / "trainer.cfg"
    trainer_flags.write_text("# the job's machines cannot read this file\n--batch_size=16\n")
    job = dry_run(capsys, "--trainer_arg=--augment", "--",
                  f"--flagfile={trainer_flags}", "--epochs", "3", "--strategy=mirrored")
    args = pools(job)[0]["containerSpec"]["args"]
    assert args == ["--data_dir=gs://fer-bucket/records", "--job_dir=gs://fer-bucket/runs/run1",
                    "--augment", "--batch_size=16", "--epochs", "3", "--strategy=mirrored"]


def test_another_container_image_replaces_ours(capsys):
    job = dry_run(capsys, "--flagfile=configs/hardware/vertex_gpu.cfg",
                  "--container_image=us-central1-docker.pkg.dev/my-project/ml/trainer:3")
    [chief] = pools(job)
    assert "pythonPackageSpec" not in chief
    assert chief["containerSpec"] == {
        "imageUri": "us-central1-docker.pkg.dev/my-project/ml/trainer:3",
        "command": ["python", "-m", "trainer"],
        "args": [*BASE_ARGS, "--mixed_precision=auto"],
    }


def test_image_placeholders_are_filled_in(capsys):
    job = dry_run(capsys, "--container_image={region}-docker.pkg.dev/{project}/ml/t:{version}-b")
    assert pools(job)[0]["containerSpec"]["imageUri"] == (
        "us-central1-docker.pkg.dev/my-project/ml/t:0.1.0-b")


def test_tensorboard_service_account_spot_timeout_labels_network(capsys):
    job = dry_run(capsys, "--tensorboard=123", "--service_account=sa@p.iam.gserviceaccount.com",
                  "--spot", "--timeout_hours=1.5", "--labels=team=ml,run=exp-1",
                  "--network=projects/123456/global/networks/default")
    spec = job["jobSpec"]
    assert spec["tensorboard"] == "projects/my-project/locations/us-central1/tensorboards/123"
    assert spec["serviceAccount"] == "sa@p.iam.gserviceaccount.com"
    assert spec["network"] == "projects/123456/global/networks/default"
    # One replica: a Spot preemption restarts it and it resumes from its backup on its own.
    assert spec["scheduling"] == {"strategy": "SPOT", "timeout": "5400s"}
    assert job["labels"] == {"team": "ml", "run": "exp-1"}


def test_staging_dir_is_where_a_prebuilt_image_gets_our_sdist(capsys):
    job = dry_run(capsys, f"--executor_image_uri={IMAGES}/tf-gpu.2-21.py311:latest",
                  "--staging_dir=gs://other-bucket/pkgs")
    assert pools(job)[0]["pythonPackageSpec"]["packageUris"] == [
        "gs://other-bucket/pkgs/run1/vggface_emotion-0.1.0.tar.gz"]


@pytest.mark.parametrize(("args", "scheduling"), [
    (["--worker_count=1"], {"restartJobOnWorkerRestart": True}),
    (["--worker_count=3", "--spot"], {"restartJobOnWorkerRestart": True, "strategy": "SPOT"}),
    (["--worker_count=2", "--timeout_hours=2"],
     {"restartJobOnWorkerRestart": True, "timeout": "7200s"}),
    (["--worker_count=0", "--spot"], {"strategy": "SPOT"}),
    (["--flagfile=configs/hardware/vertex_multiworker.cfg", "--spot"],
     {"restartJobOnWorkerRestart": True, "strategy": "SPOT"}),
])
def test_replicas_restart_together_whenever_there_are_workers(capsys, args, scheduling):
    assert dry_run(capsys, *args)["jobSpec"]["scheduling"] == scheduling


@pytest.mark.parametrize(("args", "expected"), [
    (["--worker_count=2"], ["--strategy=multi_worker_mirrored",
                            "--collective_timeout_seconds=600"]),
    (["--worker_count=2", "--collective_timeout_seconds=120.5"],
     ["--strategy=multi_worker_mirrored", "--collective_timeout_seconds=120.5"]),
    (["--worker_count=2", "--collective_timeout_seconds=0"], ["--strategy=multi_worker_mirrored"]),
    (["--worker_count=2", "--", "--collective_timeout_seconds=30"],
     ["--strategy=multi_worker_mirrored", "--collective_timeout_seconds=30"]),
    (["--worker_count=0"], []),
])
def test_multi_worker_jobs_get_a_finite_collective_timeout(capsys, args, expected):
    for pool in pools(dry_run(capsys, *args)):
        assert pool["containerSpec"]["args"] == [*BASE_ARGS, *expected]


def test_dry_run_warns_that_the_prebuilt_image_python_is_too_old(capsys):
    assert main(["launch", "train", *REQUIRED, f"--executor_image_uri={PREBUILT_PY310}",
                 "--dry_run"]) == 0
    err = capsys.readouterr().err
    assert "runs Python 3.10, but this package requires Python" in err
    assert "--container_image" in err


@pytest.mark.parametrize(("args", "expected"), [
    (["--job_dir=runs/run1"], "--job_dir='runs/run1' must be a Cloud Storage path"),
    (["--data_dir=/data/records"], "--data_dir='/data/records' must be a Cloud Storage path"),
    (["--region=us-cental1"], "Did you mean us-central1"),
    (["--accelerator_type=NVIDIA_TESLA_T5"], "'NVIDIA_TESLA_T5' is not one of"),
    (["--tensorboard=123"], "--tensorboard needs --service_account"),
    (["--flagfile=configs/hardware/vertex_tpu.cfg", "--worker_count=1"],
     "TPU job has a single TPU host"),
    (["--", "--job_dir=gs://x/y"], "Give --job_dir to the launcher, not after `--`"),
    (["--acelerator_type=NVIDIA_TESLA_T4"], "Unknown command line flag 'acelerator_type'"),
    (["--labels=Team=ml"], "label key 'Team' must start with a lower-case letter"),
    (["--labels=team"], "'team' is not key=value"),
    (["--labels=team=M L"], "label value 'M L' (of team)"),
    (["--network=default"], "projects/PROJECT_NUMBER/global/networks/NETWORK"),
    (["--container_image={project}/{zone}/t:1"], "placeholder(s) zone"),
    (["--container_image=x/y:1", f"--executor_image_uri={PREBUILT_PY310}"],
     "--container_image or --executor_image_uri, not both"),
])
def test_bad_flags_get_one_clear_message(capsys, args, expected):
    assert expected in error_of(capsys, *REQUIRED, "--dry_run", *args)


def test_missing_required_flag_is_named(capsys):
    assert "--data_dir is required" in error_of(
        capsys, "--project=p", "--region=us-central1", "--job_dir=gs://b/j", "--dry_run")
