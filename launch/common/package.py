"""Our code as Vertex AI installs it: the source distribution, built here and copied to GCS.

The sdist is built from this checkout's setup.py (the same file Dataflow's --setup_file uses), so
the cloud runs exactly the code on disk, uncommitted edits included.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from launch.common.errors import LaunchError
from launch.common.validation import gcs_bucket

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_PY = REPO_ROOT / "setup.py"


@dataclasses.dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    requires_python: str

    @property
    def sdist_filename(self) -> str:
        """The standard (PEP 625) file name, whatever the local setuptools calls it."""
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}.tar.gz"


def require_setup_py(setup_py: Path = SETUP_PY) -> Path:
    if not setup_py.is_file():
        raise LaunchError(
            f"{setup_py} not found: the launchers ship this project's source to the cloud, so "
            "run them from a clone of the repository (pip install -e '.[cloud]')."
        )
    return setup_py


def read_distribution(setup_py: Path = SETUP_PY) -> Distribution:
    """Name, version and Requires-Python from setup.py, without building or writing anything."""
    from distutils.core import run_setup  # setuptools' copy where setuptools is installed

    dist = run_setup(str(require_setup_py(setup_py)), stop_after="init")
    return Distribution(dist.get_name(), dist.get_version(), dist.python_requires or "")


def build_sdist(out_dir: Path, source_dir: Path = REPO_ROOT) -> Path:
    """Builds the sdist into out_dir with the current environment's setuptools; returns its path.

    No build isolation: that would download setuptools from PyPI on every launch.
    """
    import build
    import pyproject_hooks

    require_setup_py(source_dir / "setup.py")
    builder = build.ProjectBuilder(source_dir, runner=pyproject_hooks.quiet_subprocess_runner)
    try:
        return Path(builder.build("sdist", out_dir))
    except build.BuildBackendException as error:
        raise LaunchError(f"Building the source distribution of {source_dir} failed: {error}. "
                          f"Run `python -m build --sdist --no-isolation {source_dir}` to see "
                          "the build's own output.") from None


def upload(storage_client, local_path: Path, gcs_uri: str) -> str:
    """Copies local_path to gcs_uri (gs://bucket/object); returns gcs_uri."""
    bucket = storage_client.bucket(gcs_bucket(gcs_uri))
    blob = bucket.blob(gcs_uri.removeprefix("gs://").split("/", 1)[1])
    blob.upload_from_filename(str(local_path), content_type="application/gzip")
    return gcs_uri
