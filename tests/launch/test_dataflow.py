"""`python -m launch preprocess`: the Dataflow request it prints, builds and refuses."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from launch.__main__ import main
from tests.conftest import REPO_ROOT
from tests.support.fer_csv import csv_text, random_faces

REQUIRED = ["--project=my-project", "--region=europe-west4",
            "--input=gs://fer-bucket/raw/fer2013.csv", "--output_dir=gs://fer-bucket/records"]


def dry_run(capsys, *args):
    assert main(["launch", "preprocess", *REQUIRED, *args, "--dry_run"]) == 0
    return json.loads(capsys.readouterr().out)


def error_of(capsys, *args) -> str:
    assert main(["launch", "preprocess", *args]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_dry_run_with_config_has_dataflow_options(capsys):
    request = dry_run(capsys, "--flagfile=configs/preprocess/dataflow.cfg")
    options = request["pipeline_options"]
    assert options["runner"] == "DataflowRunner"
    assert options["project"] == "my-project"
    assert options["region"] == "europe-west4"
    # The worker image `launch image` pushes, with our package preinstalled: no --setup_file.
    assert options["sdk_container_image"] == (
        "europe-west4-docker.pkg.dev/my-project/vggface-emotion/dataflow-worker:0.1.0")
    assert options["sdk_location"] == "container"
    assert "setup_file" not in options
    assert options["machine_type"] == "n1-standard-2"
    assert options["max_num_workers"] == 4
    # Temp and staging default to the output bucket.
    assert options["temp_location"] == "gs://fer-bucket/dataflow/temp"
    assert options["staging_location"] == "gs://fer-bucket/dataflow/staging"
    assert options["job_name"].startswith("vggface-emotion-preprocess-")
    flags = request["beam_preprocess_flags"]
    assert flags["input"] == "gs://fer-bucket/raw/fer2013.csv"
    assert flags["output_dir"] == "gs://fer-bucket/records"
    assert (flags["num_shards"], flags["num_eval_shards"], flags["image_size"]) == (16, 4, 224)


def test_dry_run_passes_further_options_and_flags_through(capsys):
    request = dry_run(
        capsys, "--worker_machine_type=n2-standard-4", "--max_num_workers=20", "--num_workers=2",
        "--temp_location=gs://other/tmp", "--job_name=fer-prep-1",
        "--sdk_container_image=europe-docker.pkg.dev/p/r/worker:1",
        "--service_account_email=prep@my-project.iam.gserviceaccount.com",
        "--experiments=use_runner_v2", "--disk_size_gb", "30",  # Beam options we do not define
        "--image_size=96", "--labels=ferplus",
        "--ferplus_csv=gs://fer-bucket/raw/fer2013new.csv")  # beam_preprocess's flags
    options = request["pipeline_options"]
    assert options["machine_type"] == "n2-standard-4"
    assert (options["max_num_workers"], options["num_workers"]) == (20, 2)
    assert options["temp_location"] == "gs://other/tmp"
    assert options["staging_location"] == "gs://fer-bucket/dataflow/staging"
    assert options["job_name"] == "fer-prep-1"
    assert options["sdk_container_image"] == "europe-docker.pkg.dev/p/r/worker:1"
    assert "setup_file" not in options  # the image has our package
    assert options["service_account_email"] == "prep@my-project.iam.gserviceaccount.com"
    assert options["experiments"] == ["use_runner_v2"]
    assert options["disk_size_gb"] == 30
    flags = request["beam_preprocess_flags"]
    assert (flags["image_size"], flags["labels"]) == (96, "ferplus")
    assert flags["ferplus_csv"] == "gs://fer-bucket/raw/fer2013new.csv"


def test_without_an_image_workers_install_our_sdist(capsys):
    options = dry_run(capsys)["pipeline_options"]
    assert options["setup_file"] == str(REPO_ROOT / "setup.py")
    assert "sdk_container_image" not in options and "sdk_location" not in options


def test_an_explicit_sdk_location_is_kept(capsys):
    options = dry_run(capsys, "--sdk_container_image={region}-docker.pkg.dev/{project}/r/w:1",
                      "--sdk_location=gs://fer-bucket/beam.tar.gz")["pipeline_options"]
    assert options["sdk_container_image"] == "europe-west4-docker.pkg.dev/my-project/r/w:1"
    assert options["sdk_location"] == "gs://fer-bucket/beam.tar.gz"


@pytest.mark.parametrize(("args", "expected"), [
    (["--image_szie", "48"], "unknown flag --image_szie (did you mean --image_size?)"),
    (["--image_szie=48"], "unknown flag --image_szie (did you mean --image_size?)"),
    (["--num_shard=4"], "unknown flag --num_shard"),
    (["--disk_size_g=30"], "unknown flag --disk_size_g"),  # a Beam option's typo
    (["--max_num_worker=3"], "unknown flag --max_num_worker"),  # a launcher flag's typo
    (["stray"], "unexpected argument 'stray'"),
])
def test_unknown_flags_exit_2_before_anything_runs(capsys, args, expected):
    """Beam would only log "Discarding unparseable args" and run with the defaults."""
    for dry in ([], ["--dry_run"]):  # a real run stops before credentials or any upload
        assert main(["launch", "preprocess", *REQUIRED,
                     "--flagfile=configs/preprocess/dataflow.cfg", *args, *dry]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert f"launch preprocess: error: {expected}" in captured.err
        assert "Traceback" not in captured.err


def test_unknown_flag_is_refused_without_contacting_anything():
    result = subprocess.run(
        [sys.executable, "-m", "launch", "preprocess", *REQUIRED, "--image_szie", "48"],
        cwd=REPO_ROOT, env=no_credentials_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "unknown flag --image_szie" in result.stderr
    assert "credentials" not in result.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (["--input=data/fer2013.csv"], "--input='data/fer2013.csv' must be a Cloud Storage path"),
    (["--output_dir=/tmp/records"], "--output_dir='/tmp/records' must be a Cloud Storage path"),
    (["--ferplus_csv=fer2013new.csv"], "--ferplus_csv='fer2013new.csv' must be a Cloud Storage"),
    (["--region=us-centrall"], "not a Google Cloud region. Did you mean us-central1"),
    (["--region=us-central1-a"], "not a Google Cloud region"),
    (["--job_name=Fer_Prep"], "not a valid Dataflow job name"),
])
def test_bad_flags_get_one_clear_message(capsys, args, expected):
    err = error_of(capsys, *REQUIRED, *args, "--dry_run")
    assert expected in err
    assert "Traceback" not in err


def test_missing_required_flag_is_named(capsys):
    err = error_of(capsys, "--project=p", "--region=us-central1", "--input=gs://b/f.csv")
    assert "--output_dir is required" in err


def test_preprocess_does_not_need_the_cloud_extra():
    """google-cloud-aiplatform is only for `launch train`."""
    check = ("import sys; from launch.__main__ import main; "
             f"assert main(['launch', 'preprocess', *{REQUIRED!r}, '--dry_run']) == 0; "
             "assert 'google.cloud.aiplatform_v1' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def no_credentials_env() -> dict:
    """This machine's environment without any way for google.auth to find credentials."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")}
    env["CLOUDSDK_CONFIG"] = "/nonexistent-gcloud-config"
    env["NO_GCE_CHECK"] = "True"  # no probe of the GCE metadata server
    return env


def test_missing_credentials_say_how_to_log_in():
    result = subprocess.run(
        [sys.executable, "-m", "launch", "preprocess", *REQUIRED],
        cwd=REPO_ROOT, env=no_credentials_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "gcloud auth application-default login" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_dataflow_job_graph_is_built_offline(gcs_emulator, gcs_client, tmp_path):
    """DataflowRunner writes the full job (as a template file) from our argv without Google:
    the sdist from setup.py is staged to the emulated bucket, the graph is serialized."""
    from absl import flags
    from absl.testing import flagsaver
    from apache_beam.portability.api import beam_runner_api_pb2

    from beam_preprocess import pipeline
    from launch.preprocess import dataflow

    bucket = gcs_client.bucket(gcs_emulator)
    bucket.blob("raw/fer2013.csv").upload_from_string(csv_text(random_faces(6)))
    settings = dataflow.DataflowSettings(
        project="test-project", region="us-central1",
        input=f"gs://{gcs_emulator}/raw/fer2013.csv", output_dir=f"gs://{gcs_emulator}/records",
        job_name="template-test", worker_machine_type="n1-standard-2", max_num_workers=2,
        extra_args=("--num_shards=2",))
    template = tmp_path / "job.json"
    with flagsaver.flagsaver():  # pipeline.run parses the process's global flags
        flags.FLAGS.unparse_flags()
        pipeline.run(dataflow.pipeline_argv(settings) + [f"--template_location={template}"])

    job = json.loads(template.read_text())
    assert job["name"] == "template-test"
    workers = job["environment"]["workerPools"][0]
    assert workers["machineType"] == "n1-standard-2"
    assert workers["autoscalingSettings"]["maxNumWorkers"] == 2
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert options["region"] == "us-central1"
    assert options["setup_file"] == str(REPO_ROOT / "setup.py")

    staged = {Path(p["location"]).name: p["location"] for p in workers["packages"]}
    workflow = download(bucket, staged["workflow.tar.gz"], tmp_path / "workflow.tar.gz")
    with tarfile.open(workflow) as sdist:  # the workers pip-install this: our code
        names = sdist.getnames()
    assert any(name.endswith("beam_preprocess/pipeline.py") for name in names), names
    assert any(name.endswith("beam_preprocess/record_format.py") for name in names), names

    graph = beam_runner_api_pb2.Pipeline.FromString(
        download(bucket, options["pipelineUrl"], tmp_path / "pipeline.pb").read_bytes())
    steps = {t.unique_name for t in graph.components.transforms.values()}
    assert {"ReadCsv", "ParseRows", "CountRows", "WriteShards", "WriteShardResults"} <= steps
    assert "Commit" not in steps  # the commit runs in the driver, once, after the pipeline


def download(bucket, location: str, path: Path) -> Path:
    """A staged file named by its gs:// URL or Dataflow's storage.googleapis.com/ form."""
    name = location.removeprefix("gs://").removeprefix("storage.googleapis.com/").split("/", 1)[1]
    bucket.blob(name).download_to_filename(str(path))
    return path
