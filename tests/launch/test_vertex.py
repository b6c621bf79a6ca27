"""`python -m launch train --dry_run`: the Vertex AI CustomJob request for each config."""

import json

import pytest

from launch.__main__ import main

REQUIRED = ["--project=my-project", "--region=us-central1",
            "--data_dir=gs://fer-bucket/records", "--job_dir=gs://fer-bucket/runs/run1",
            "--display_name=run1"]
PACKAGE_URI = "gs://fer-bucket/staging/run1/vggface_emotion-0.1.0.tar.gz"
IMAGES = "us-docker.pkg.dev/vertex-ai/training"


def dry_run(capsys, *args) -> dict:
    assert main(["launch", "train", *REQUIRED, "--dry_run", *args]) == 0
    request = json.loads(capsys.readouterr().out)
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
    job = dry_run(capsys, "--flagfile=configs/vertex_gpu.cfg", "--", "--epochs=2")
    assert job["displayName"] == "run1"
    assert job["jobSpec"]["baseOutputDirectory"] == {
        "outputUriPrefix": "gs://fer-bucket/runs/run1"}
    [chief] = pools(job)
    assert chief["machineSpec"] == {"machineType": "n1-standard-8",
                                    "acceleratorType": "NVIDIA_TESLA_T4", "acceleratorCount": 1}
    assert chief["replicaCount"] == "1"
    assert chief["pythonPackageSpec"] == {
        "executorImageUri": f"{IMAGES}/tf-gpu.2-17.py310:latest",
        "packageUris": [PACKAGE_URI],
        "pythonModule": "trainer",
        "args": ["--data_dir=gs://fer-bucket/records", "--job_dir=gs://fer-bucket/runs/run1",
                 "--mixed_precision", "--epochs=2"],
    }


def test_multiworker_config_has_a_chief_and_workers(capsys):
    job = dry_run(capsys, "--flagfile=configs/vertex_multiworker.cfg")
    chief, workers = pools(job)
    assert (chief["replicaCount"], workers["replicaCount"]) == ("1", "2")
    for pool in (chief, workers):
        assert pool["machineSpec"] == {"machineType": "n1-standard-8",
                                       "acceleratorType": "NVIDIA_TESLA_T4",
                                       "acceleratorCount": 1}
        assert pool["pythonPackageSpec"]["pythonModule"] == "trainer"
        assert pool["pythonPackageSpec"]["packageUris"] == [PACKAGE_URI]
        assert "--strategy=multi_worker_mirrored" in pool["pythonPackageSpec"]["args"]


def test_tpu_config(capsys):
    job = dry_run(capsys, "--flagfile=configs/vertex_tpu.cfg")
    [host] = pools(job)
    assert host["machineSpec"] == {"machineType": "cloud-tpu", "acceleratorType": "TPU_V3",
                                   "acceleratorCount": 8}
    assert host["pythonPackageSpec"]["executorImageUri"] == f"{IMAGES}/tf-tpu.2-15.cp310:latest"
    assert host["pythonPackageSpec"]["args"][2:] == ["--strategy=tpu", "--mixed_precision"]


def test_without_accelerator_runs_on_cpu_image_near_the_region(capsys):
    assert main(["launch", "train", *REQUIRED, "--region=europe-west4", "--dry_run"]) == 0
    [chief] = pools(json.loads(capsys.readouterr().out)["customJob"])
    assert chief["machineSpec"] == {"machineType": "n1-standard-8"}
    assert chief["pythonPackageSpec"]["executorImageUri"] == (
        "europe-docker.pkg.dev/vertex-ai/training/tf-cpu.2-17.py310:latest")


def test_trainer_flags_and_their_flagfiles_pass_through(capsys, tmp_path):
    trainer_flags = tmp_path / "trainer.cfg"
    trainer_flags.write_text("# the job's machines cannot read this file\n--batch_size=16\n")
    job = dry_run(capsys, "--trainer_arg=--augment", "--",
                  f"--flagfile={trainer_flags}", "--epochs", "3", "--strategy=mirrored")
    args = pools(job)[0]["pythonPackageSpec"]["args"]
    assert args == ["--data_dir=gs://fer-bucket/records", "--job_dir=gs://fer-bucket/runs/run1",
                    "--augment", "--batch_size=16", "--epochs", "3", "--strategy=mirrored"]


def test_custom_container_replaces_the_package(capsys):
    job = dry_run(capsys, "--flagfile=configs/vertex_gpu.cfg",
                  "--container_image=us-central1-docker.pkg.dev/my-project/ml/trainer:3")
    [chief] = pools(job)
    assert "pythonPackageSpec" not in chief
    assert chief["containerSpec"] == {
        "imageUri": "us-central1-docker.pkg.dev/my-project/ml/trainer:3",
        "command": ["python", "-m", "trainer"],
        "args": ["--data_dir=gs://fer-bucket/records", "--job_dir=gs://fer-bucket/runs/run1",
                 "--mixed_precision"],
    }


def test_tensorboard_service_account_spot_timeout_staging(capsys):
    job = dry_run(capsys, "--tensorboard=123", "--service_account=sa@p.iam.gserviceaccount.com",
                  "--spot", "--timeout_hours=1.5", "--staging_dir=gs://other-bucket/pkgs")
    spec = job["jobSpec"]
    assert spec["tensorboard"] == "projects/my-project/locations/us-central1/tensorboards/123"
    assert spec["serviceAccount"] == "sa@p.iam.gserviceaccount.com"
    assert spec["scheduling"] == {"strategy": "SPOT", "timeout": "5400s"}
    assert spec["workerPoolSpecs"][0]["pythonPackageSpec"]["packageUris"] == [
        "gs://other-bucket/pkgs/run1/vggface_emotion-0.1.0.tar.gz"]


def test_dry_run_warns_that_the_prebuilt_image_python_is_too_old(capsys):
    assert main(["launch", "train", *REQUIRED, "--dry_run"]) == 0
    err = capsys.readouterr().err
    assert "runs Python 3.10, but this package requires Python >=3.11" in err
    assert "--container_image" in err


@pytest.mark.parametrize(("args", "expected"), [
    (["--job_dir=runs/run1"], "--job_dir='runs/run1' must be a Cloud Storage path"),
    (["--data_dir=/data/records"], "--data_dir='/data/records' must be a Cloud Storage path"),
    (["--region=us-cental1"], "Did you mean us-central1"),
    (["--accelerator_type=NVIDIA_TESLA_T5"], "'NVIDIA_TESLA_T5' is not one of"),
    (["--tensorboard=123"], "--tensorboard needs --service_account"),
    (["--flagfile=configs/vertex_tpu.cfg", "--worker_count=1"], "TPU job has a single TPU host"),
    (["--", "--job_dir=gs://x/y"], "Give --job_dir to the launcher, not after `--`"),
    (["--acelerator_type=NVIDIA_TESLA_T4"], "Unknown command line flag 'acelerator_type'"),
])
def test_bad_flags_get_one_clear_message(capsys, args, expected):
    assert expected in error_of(capsys, *REQUIRED, "--dry_run", *args)


def test_missing_required_flag_is_named(capsys):
    assert "--data_dir is required" in error_of(
        capsys, "--project=p", "--region=us-central1", "--job_dir=gs://b/j", "--dry_run")
