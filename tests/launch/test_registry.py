"""The check that an image exists before a job that runs it is created (and billed)."""

import pytest

from launch.__main__ import main
from launch.common import registry
from launch.common.errors import LaunchError
from launch.train import cli as train_cli
from launch.train import submit as train_submit

IMAGE = "us-central1-docker.pkg.dev/my-project/vggface-emotion/trainer-gpu:0.1.0"


class FakeSession:
    def __init__(self, status=200, error=None):
        self.status, self.error, self.asked = status, error, []

    def head(self, url, headers, timeout):
        self.asked.append((url, headers))
        if self.error:
            raise self.error

        class Response:
            status_code = self.status

        return Response()


@pytest.mark.parametrize(("image", "url"), [
    (IMAGE, "https://us-central1-docker.pkg.dev/v2/my-project/vggface-emotion/trainer-gpu/"
            "manifests/0.1.0"),
    ("europe-docker.pkg.dev/p/r/img@sha256:abc",
     "https://europe-docker.pkg.dev/v2/p/r/img/manifests/sha256:abc"),
    ("gcr.io/p/img", "https://gcr.io/v2/p/img/manifests/latest"),
    ("eu.gcr.io/p/img:2", "https://eu.gcr.io/v2/p/img/manifests/2"),
    ("docker.io/library/python:3.11", None),  # not a Google registry: not checked
    ("python:3.11", None),
])
def test_manifest_urls(image, url):
    assert registry.manifest_url(image) == url


def test_a_missing_image_stops_the_launch_with_the_build_command():
    with pytest.raises(LaunchError, match=r"does not exist.*python -m launch image"):
        registry.check_image_exists(FakeSession(404), IMAGE, "python -m launch image ...")


@pytest.mark.parametrize(("session", "warning"), [
    (FakeSession(403), "may not read"),
    (FakeSession(500), "HTTP 500"),
    (FakeSession(error=OSError("unreachable")), "could not check"),
])
def test_an_unclear_answer_only_warns(session, warning):
    warnings = []
    registry.check_image_exists(session, IMAGE, "hint", warn=warnings.append)
    assert len(warnings) == 1 and warning in warnings[0]


def test_an_existing_image_passes_and_the_manifest_is_asked_for():
    session = FakeSession(200)
    registry.check_image_exists(session, IMAGE, "hint", warn=pytest.fail)
    [(url, headers)] = session.asked
    assert url.endswith("/trainer-gpu/manifests/0.1.0")
    assert "application/vnd.oci.image.index.v1+json" in headers["Accept"]


def test_train_stops_before_uploading_or_creating_a_job(monkeypatch, capsys):
    session = FakeSession(404)
    monkeypatch.setattr(train_cli, "load_credentials", lambda: object())
    monkeypatch.setattr(registry, "authorized_session", lambda credentials: session)
    monkeypatch.setattr(train_submit, "job_client", lambda *a: pytest.fail("job client made"))
    code = main(["launch", "train", "--project=my-project", "--region=us-central1",
                 "--data_dir=gs://b/records", "--job_dir=gs://b/runs/1",
                 "--flagfile=configs/hardware/vertex_gpu.cfg"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"The image {IMAGE} does not exist" in err
    assert "python -m launch image --project=my-project --region=us-central1" in err
    assert len(session.asked) == 1
