"""`python -m launch image`: the build context (.dockerignore), the Cloud Build request it prints,
and what it sends to (fakes of) Cloud Storage and Cloud Build."""

import datetime
import gzip
import io
import json
import re
import tarfile

import pytest
from google.cloud.devtools import cloudbuild_v1

from launch.__main__ import main
from launch.common import images
from launch.image import cli as image_cli
from launch.image import dockerignore
from launch.image import submit as image_submit
from tests.conftest import REPO_ROOT

REQUIRED = ["--project=my-project", "--region=europe-west4"]
REGISTRY = "europe-west4-docker.pkg.dev/my-project/vggface-emotion"
NAMES = ["trainer-gpu", "trainer-tpu", "dataflow-worker", "predictor"]


def dry_run(capsys, *args) -> dict:
    assert main(["launch", "image", *REQUIRED, *args, "--dry_run"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return json.loads(captured.out)


# --- .dockerignore semantics -------------------------------------------------------------------

@pytest.mark.parametrize(("patterns", "path", "excluded"), [
    ("build", "build", True),
    ("build", "build/lib/x.py", True),  # a matched directory takes its contents along
    ("build", "src/build", False),  # patterns are anchored at the context root
    ("/build", "build/x", True),
    ("./build", "build/x", True),
    ("*.egg-info", "vggface_emotion.egg-info/PKG-INFO", True),
    ("*.egg-info", "sub/x.egg-info", False),  # * stays within one path component
    ("**/__pycache__", "trainer/export/__pycache__/x.pyc", True),
    ("**/__pycache__", "__pycache__/x.pyc", True),  # ** also matches no directory
    ("**/*.py[cod]", "launch/a.pyc", True),
    ("**/*.py[cod]", "launch/a.py", False),
    ("data/?.csv", "data/a.csv", True),
    ("data/?.csv", "data/ab.csv", False),
    ("tests\n!tests/keep.txt", "tests/keep.txt", False),  # ! re-includes; the last match wins
    ("tests\n!tests/keep.txt", "tests/other.txt", True),
    ("!tests/keep.txt\ntests", "tests/keep.txt", True),
    ("# a comment\n\n  runs  ", "runs/1", True),
])
def test_dockerignore_rules(patterns, path, excluded):
    assert dockerignore.is_excluded(path, dockerignore.parse(patterns)) is excluded


def test_context_walks_into_excluded_directories_only_for_exceptions(tmp_path):
    for rel in ("keep/a.txt", "drop/b.txt", "drop/sub/c.txt", "drop/sub/keep.txt", "top.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / ".dockerignore").write_text("drop\n!drop/sub/keep.txt\n*.txt\n!keep/*.txt\n")
    assert dockerignore.context_files(tmp_path) == [".dockerignore", "drop/sub/keep.txt",
                                                    "keep/a.txt"]


def test_repository_context_has_the_code_and_none_of_the_clutter():
    files = dockerignore.context_files(REPO_ROOT)
    assert {"setup.py", "constraints.txt", "pyproject.toml", "containers/check_install.py",
            "containers/requirements.py", "containers/cuda-constraints.txt",
            "trainer/__main__.py", "beam_preprocess/pipeline.py",
            "trainer/inference/prediction_server.py",
            *images.DOCKERFILES.values()} <= set(files)
    for path in files:
        top = path.split("/", 1)[0]
        assert top not in {".git", ".venv", "build", "dist", "tests", "bench", "demo_output",
                           ".pytest_cache", ".ruff_cache", "docs", "README.md"}, path
        assert "__pycache__" not in path and not path.endswith((".pyc", ".egg-info")), path
        assert not top.endswith(".egg-info"), path
    # The web demo's page is package data.
    assert "trainer/inference/webdemo/static/index.html" in files


def test_archive_is_the_context_and_is_reproducible(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "pkg" / "run.sh").chmod(0o755)
    (tmp_path / "setup.py").write_text("print()\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "huge").write_bytes(b"x" * 1000)
    (tmp_path / ".dockerignore").write_text(".venv\n")
    first = dockerignore.build_archive(tmp_path)
    assert first.files == (".dockerignore", "pkg/run.sh", "setup.py")
    assert dockerignore.build_archive(tmp_path).data == first.data  # no timestamps inside
    with tarfile.open(fileobj=io.BytesIO(first.data)) as tar:
        assert tar.getnames() == list(first.files)
        assert tar.getmember("pkg/run.sh").mode & 0o111  # executable bits kept
        assert tar.extractfile("setup.py").read() == b"print()\n"
    assert gzip.decompress(first.data)  # a .tar.gz, as Cloud Build's storage source expects


# --- the dry run -------------------------------------------------------------------------------

def test_dry_run_prints_the_complete_build_request(capsys, offline):
    printed = dry_run(capsys)
    archive = printed["sourceArchive"]
    object_name = archive["uploadTo"].removeprefix("gs://my-project_cloudbuild/")
    assert re.fullmatch(r"source/vggface-emotion-0\.1\.0-\d{8}-\d{6}-[0-9a-f]{8}\.tgz",
                        object_name), object_name
    assert object_name.endswith(f"-{archive['sha256'][:8]}.tgz")
    assert archive["files"] == len(dockerignore.context_files(REPO_ROOT))
    assert 0 < archive["bytes"] < 5_000_000
    assert {".git", ".venv", "tests"} <= set(archive["leftOutByDockerignore"])
    assert printed["images"] == {name: f"{REGISTRY}/{name}:0.1.0" for name in NAMES}

    request = printed["createBuildRequest"]
    assert request["parent"] == "projects/my-project/locations/europe-west4"
    assert request["projectId"] == "my-project"
    build = request.pop("build")
    assert request == {"parent": "projects/my-project/locations/europe-west4",
                       "projectId": "my-project"}
    assert build == {
        "source": {"storageSource": {"bucket": "my-project_cloudbuild", "object": object_name}},
        "steps": [{
            "name": "gcr.io/cloud-builders/docker",
            "args": ["build", "--file", f"containers/{name}.Dockerfile", "--tag",
                     f"{REGISTRY}/{name}:0.1.0", "."],
            "id": f"build-{name}",
            "waitFor": ["-"],  # all four build at once
        } for name in NAMES],
        "timeout": "7200s",
        "images": [f"{REGISTRY}/{name}:0.1.0" for name in NAMES],  # pushed after the steps
        "options": {"machineType": "E2_HIGHCPU_8", "diskSizeGb": "200",
                    "logging": "CLOUD_LOGGING_ONLY"},
        "tags": ["vggface-emotion"],
    }


def test_dry_run_options(capsys, offline):
    printed = dry_run(capsys, "--repository=ml-images", "--tag=exp-3", "--images=predictor",
                      "--staging_dir=gs://my-bucket/builds/", "--machine_type=E2_HIGHCPU_32",
                      "--disk_size_gb=100", "--timeout_hours=0.5",
                      "--service_account=builder@my-project.iam.gserviceaccount.com")
    image = "europe-west4-docker.pkg.dev/my-project/ml-images/predictor:exp-3"
    assert printed["images"] == {"predictor": image}
    build = printed["createBuildRequest"]["build"]
    assert build["source"]["storageSource"]["bucket"] == "my-bucket"
    assert build["source"]["storageSource"]["object"].startswith("builds/vggface-emotion-exp-3-")
    assert [step["args"] for step in build["steps"]] == [
        ["build", "--file", "containers/predictor.Dockerfile", "--tag", image, "."]]
    assert build["images"] == [image]
    assert build["options"] == {"machineType": "E2_HIGHCPU_32", "diskSizeGb": "100",
                                "logging": "CLOUD_LOGGING_ONLY"}
    assert build["timeout"] == "1800s"
    assert build["serviceAccount"] == (
        "projects/my-project/serviceAccounts/builder@my-project.iam.gserviceaccount.com")
    assert build["tags"] == ["vggface-emotion", "ml-images"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--images=trainer-cpu"], "unknown image 'trainer-cpu'"),
    (["--tag=-bad"], "--tag='-bad' is not a Docker tag"),
    (["--repository=My_Repo"], "--repository='My_Repo' is not an Artifact Registry"),
    (["--machine_type=n1-standard-8"], "--machine_type='n1-standard-8' is not one of"),
    (["--region=us-central"], "not a Google Cloud region"),
    (["--staging_dir=/tmp/x"], "--staging_dir='/tmp/x' must be a Cloud Storage path"),
    (["--imagez=predictor"], "Unknown command line flag 'imagez'"),
])
def test_bad_flags_get_one_clear_message(capsys, args, expected):
    assert main(["launch", "image", *REQUIRED, *args, "--dry_run"]) in (1, 2)
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert expected in captured.err


def test_project_is_required(capsys):
    assert main(["launch", "image", "--region=us-central1", "--dry_run"]) == 2
    assert "--project is required" in capsys.readouterr().err


def test_image_addresses():
    assert images.image_uri("trainer-gpu", "example.com:proj", "us-east1", "1.0") == (
        "us-east1-docker.pkg.dev/example.com/proj/vggface-emotion/trainer-gpu:1.0")
    assert images.expand_image("{region}-docker.pkg.dev/{project}/r/p:{version}",
                               project="p1", region="asia-east1", version="2") == (
        "asia-east1-docker.pkg.dev/p1/r/p:2")


# --- what a real build sends (fakes of the clients) --------------------------------------------

class FakeStorage:
    def __init__(self):
        self.uploads = {}

    def bucket(self, name):
        storage = self

        class Blob:
            def __init__(self, object_name):
                self.object_name = object_name

            def upload_from_string(self, data, content_type):
                storage.uploads[f"gs://{name}/{self.object_name}"] = (data, content_type)

        class Bucket:
            def blob(self, object_name):
                return Blob(object_name)

        return Bucket()


class FakeCloudBuild:
    def __init__(self, statuses=()):
        self.created, self.polled = [], []
        self._statuses = list(statuses)

    def create_build(self, *, request):
        self.created.append(request)

        class Operation:
            metadata = cloudbuild_v1.BuildOperationMetadata(build=cloudbuild_v1.Build(
                id="b-123", log_url="https://console.cloud.google.com/cloud-build/builds/b-123"))

        return Operation()

    def get_build(self, *, request):
        self.polled.append(request)
        status = self._statuses.pop(0)
        build = cloudbuild_v1.Build(id="b-123", status=status)
        if status == cloudbuild_v1.Build.Status.SUCCESS:
            build.results.images.append(cloudbuild_v1.BuiltImage(
                name=f"{REGISTRY}/predictor:0.1.0", digest="sha256:abc"))
        return build


def test_submission_uploads_the_context_then_starts_the_build(offline):
    archive = dockerignore.build_archive(REPO_ROOT)
    fv = image_cli.define_flags()
    fv(["image", *REQUIRED])
    build = image_cli.build_from_flags(fv, archive, now=datetime.datetime(2026, 1, 2, 3, 4, 5))
    storage, client, lines = FakeStorage(), FakeCloudBuild(), []
    created = image_submit.submit_build(build, archive, storage_client=storage,
                                        build_client=client, echo=lines.append)
    uri = f"gs://my-project_cloudbuild/source/vggface-emotion-0.1.0-20260102-030405-" \
          f"{archive.sha256[:8]}.tgz"
    assert storage.uploads == {uri: (archive.data, "application/gzip")}
    [request] = client.created
    assert request == images.create_build_request(build)
    assert created.id == "b-123"
    assert lines[0].startswith(f"Uploaded the build context ({len(archive.files)} files")
    assert "Started Cloud Build job b-123" in lines[1]
    with tarfile.open(fileobj=io.BytesIO(storage.uploads[uri][0])) as tar:
        names = set(tar.getnames())
    assert "containers/trainer-gpu.Dockerfile" in names and "setup.py" in names
    assert not any(name.startswith((".venv", ".git/", "tests/")) for name in names)


def test_waiting_follows_the_build_to_its_end():
    status = cloudbuild_v1.Build.Status
    client = FakeCloudBuild([status.QUEUED, status.WORKING, status.WORKING, status.SUCCESS])
    build = images.ImageBuild(project="my-project", region="europe-west4", tag="0.1.0",
                              source_bucket="b", source_object="o.tgz")
    sleeps, lines = [], []
    final = image_submit.wait_for_build(client, build, "b-123", 30, sleep=sleeps.append,
                                        echo=lines.append)
    assert final.status == status.SUCCESS
    assert lines == ["QUEUED", "WORKING", "SUCCESS"] and sleeps == [30, 30, 30]
    assert client.polled[0] == {"name": "projects/my-project/locations/europe-west4/builds/b-123",
                                "project_id": "my-project", "id": "b-123"}
