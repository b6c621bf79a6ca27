"""Shared test fixtures: a local GCS emulator and small fer2013-format CSVs."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beam_preprocess.cpu_kernels import use_onednn_unless_set

# As every entry point does (the tests' subprocesses inherit it): oneDNN on unless the runner
# of the suite chose, e.g. TF_ENABLE_ONEDNN_OPTS=0 to check the tolerances without it.
use_onednn_unless_set()

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_BUCKET = "vggface-emotion-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"GCS emulator exited with code {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"GCS emulator did not listen on 127.0.0.1:{port} within {timeout}s")


# The longest files first (their totals in CI's --durations: the README's demo ~9 min, the
# learning, distributed, end-to-end and resume tests 5-12 min each), then every other module
# that holds end-to-end (`slow`) tests, then the rest: pytest-xdist hands out whole files in
# this order (--no-loadscope-reorder), so no long file starts last while the other worker idles.
LONGEST_FILES = ("tests/test_demo.py", "tests/trainer/training/test_learning.py",
                 "tests/trainer/training/test_distributed.py", "tests/trainer/test_end_to_end.py",
                 "tests/trainer/training/test_resume.py")


def pytest_collection_modifyitems(items):
    slow_modules = {item.nodeid.split("::")[0] for item in items
                    if item.get_closest_marker("slow")}

    def rank(item) -> int:
        module = item.nodeid.split("::")[0]
        if module in LONGEST_FILES:
            return LONGEST_FILES.index(module)
        return len(LONGEST_FILES) + (0 if module in slow_modules else 1)

    items.sort(key=rank)  # stable: collection order within a rank


@pytest.fixture(scope="session")
def gcs_emulator():
    """Starts gcp-storage-emulator on 127.0.0.1 and points every GCS client at it.

    Yields the bucket name (created empty). Real credentials on the machine are hidden so that
    nothing is ever sent to Google, and the emulator itself needs none.
    """
    port = _free_port()
    emulator = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory", "--default-bucket", TEST_BUCKET, "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    saved = {k: os.environ.get(k) for k in
             ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG",
              "GOOGLE_CLOUD_PROJECT")}
    try:
        _wait_for_port(port, emulator)
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        os.environ["CLOUDSDK_CONFIG"] = str(Path("/nonexistent-gcloud-config"))
        os.environ["GOOGLE_CLOUD_PROJECT"] = "test-project"
        from beam_preprocess.gcs_emulator import skip_credential_lookup_when_emulated

        skip_credential_lookup_when_emulated()
        yield TEST_BUCKET
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def gcs_client(gcs_emulator):
    """A google-cloud-storage client talking to the emulator."""
    from google.cloud import storage

    return storage.Client(project="test-project")
