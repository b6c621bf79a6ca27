"""Does a container image exist? Asked before a job that runs it is created (and billed).

A Vertex AI job or Dataflow workers given an image that was never pushed fail only after their
machines started. For Artifact Registry (*-docker.pkg.dev) and Container Registry (gcr.io)
images this asks the registry (Docker Registry HTTP API v2, HEAD of the manifest) with the
user's credentials. Only a definite "not found" stops the launch: a registry the user may not
read (but the job's service account may) or an unreachable one only gives a warning.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from launch.common.errors import LaunchError

_GOOGLE_REGISTRY = re.compile(r"(?:[a-z0-9-]+-docker\.pkg\.dev|(?:[a-z]+\.)?gcr\.io)")
_MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def manifest_url(image: str) -> str | None:
    """https://HOST/v2/PATH/manifests/REF for a Google registry image, else None."""
    host, _, rest = image.partition("/")
    if not rest or not _GOOGLE_REGISTRY.fullmatch(host):
        return None
    if "@" in rest:
        path, ref = rest.split("@", 1)
    elif ":" in rest.rsplit("/", 1)[-1]:
        path, ref = rest.rsplit(":", 1)
    else:
        path, ref = rest, "latest"
    return f"https://{host}/v2/{path}/manifests/{ref}"


def check_image_exists(session, image: str, build_hint: str,
                       warn: Callable[[str], None] | None = None) -> None:
    """Raises LaunchError if the registry says `image` does not exist.

    `session` is a requests-like session that adds the credentials
    (google.auth.transport.requests.AuthorizedSession).
    """
    warn = warn or (lambda message: print(f"WARNING: {message}", file=sys.stderr))
    url = manifest_url(image)
    if url is None:
        return
    try:
        response = session.head(url, headers={"Accept": ", ".join(_MANIFEST_TYPES)},
                                timeout=30)
    except Exception as error:  # noqa: BLE001 - a check that cannot run must not block
        warn(f"could not check that {image} exists ({type(error).__name__}); going on.")
        return
    if response.status_code == 404:
        raise LaunchError(f"The image {image} does not exist (the registry answered 404). "
                          f"Build and push it first: {build_hint}")
    if response.status_code in (401, 403):
        warn(f"your account may not read {image} (HTTP {response.status_code}); the job's "
             "service account may, so going on. If the job cannot pull it, grant "
             "roles/artifactregistry.reader.")
    elif response.status_code >= 400:
        warn(f"checking {image} gave HTTP {response.status_code}; going on.")


def authorized_session(credentials):
    from google.auth.transport.requests import AuthorizedSession

    return AuthorizedSession(credentials)
