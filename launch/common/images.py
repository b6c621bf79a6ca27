"""This project's container images: their names in Artifact Registry and the Cloud Build request
that builds and pushes them. Pure functions of settings; launch.image.submit sends the request.

Images (Dockerfiles in containers/, build context = this checkout minus .dockerignore):
  trainer-gpu      `python -m trainer` on GPU and CPU machines (Vertex AI custom jobs)
  trainer-tpu      `python -m trainer` on Cloud TPU VMs
  dataflow-worker  Beam SDK worker with beam_preprocess installed (Dataflow --sdk_container_image)
  predictor        the HTTP server that serves an export on Vertex AI endpoints (launch deploy)

Their default address: REGION-docker.pkg.dev/PROJECT/vggface-emotion/NAME:VERSION, VERSION being
setup.py's. Flags that take an image accept that address with the placeholders {project},
{region} and {version}, so the shipped configs run unchanged once `launch image` has built them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string

from google.cloud.devtools import cloudbuild_v1
from google.protobuf import duration_pb2

from launch.common.errors import LaunchError

DEFAULT_REPOSITORY = "vggface-emotion"
DOCKERFILES = {
    "trainer-gpu": "containers/trainer-gpu.Dockerfile",
    "trainer-tpu": "containers/trainer-tpu.Dockerfile",
    "dataflow-worker": "containers/dataflow-worker.Dockerfile",
    "predictor": "containers/predictor.Dockerfile",
}
DOCKER_BUILDER = "gcr.io/cloud-builders/docker"
PLACEHOLDERS = ("project", "region", "version")
# Artifact Registry repository IDs and Docker tags (docs: artifact-registry/docs/repositories).
_REPOSITORY = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def registry_host(region: str) -> str:
    return f"{region}-docker.pkg.dev"


def _project_path(project: str) -> str:
    """Domain-scoped project IDs (example.com:proj) are example.com/proj in image paths."""
    return project.replace(":", "/")


def image_uri(name: str, project: str, region: str, tag: str,
              repository: str = DEFAULT_REPOSITORY) -> str:
    """REGION-docker.pkg.dev/PROJECT/REPOSITORY/NAME:TAG."""
    if name not in DOCKERFILES:
        raise LaunchError(f"Unknown image {name!r}; the images are {', '.join(DOCKERFILES)}.")
    return f"{registry_host(region)}/{_project_path(project)}/{repository}/{name}:{tag}"


def expand_image(template: str, *, project: str, region: str, version: str,
                 flag: str = "container_image") -> str:
    """template with {project}, {region} and {version} filled in; any other {...} is an error."""
    fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    unknown = sorted(set(fields) - set(PLACEHOLDERS))
    if unknown:
        raise LaunchError(
            f"--{flag}={template!r} has the placeholder(s) {', '.join(unknown)}; only "
            f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} are filled in.")
    return template.format(project=_project_path(project), region=region, version=version)


def check_repository(repository: str) -> str:
    if not _REPOSITORY.fullmatch(repository):
        raise LaunchError(
            f"--repository={repository!r} is not an Artifact Registry repository ID: lower-case "
            "letters, digits and hyphens, starting with a letter, at most 63 characters.")
    return repository


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise LaunchError(f"--tag={tag!r} is not a Docker tag: letters, digits, '_', '.' and "
                          "'-', not starting with '.' or '-', at most 128 characters.")
    return tag


@dataclasses.dataclass(frozen=True)
class ImageBuild:
    """Everything the Cloud Build request depends on."""

    project: str
    region: str
    tag: str
    source_bucket: str  # the uploaded build context, gs://source_bucket/source_object
    source_object: str
    repository: str = DEFAULT_REPOSITORY
    images: tuple[str, ...] = tuple(DOCKERFILES)
    machine_type: str = "E2_HIGHCPU_8"
    disk_size_gb: int = 200  # the GPU image alone is ~8 GB; four build at once
    timeout_hours: float = 2.0
    service_account: str | None = None  # e.g. projects/P/serviceAccounts/SA_EMAIL

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def uri(self, name: str) -> str:
        return image_uri(name, self.project, self.region, self.tag, self.repository)

    @property
    def source_uri(self) -> str:
        return f"gs://{self.source_bucket}/{self.source_object}"


def check_build(build: ImageBuild) -> None:
    check_repository(build.repository)
    check_tag(build.tag)
    if not build.images:
        raise LaunchError("--images is empty: name at least one of " + ", ".join(DOCKERFILES))
    for name in build.images:
        if name not in DOCKERFILES:
            raise LaunchError(f"--images: unknown image {name!r}; the images are "
                              f"{', '.join(DOCKERFILES)}.")
    machine_types = [m for m in cloudbuild_v1.BuildOptions.MachineType.__members__
                     if m != "UNSPECIFIED"]
    if build.machine_type not in machine_types:
        raise LaunchError(f"--machine_type={build.machine_type!r} is not one of "
                          f"{', '.join(machine_types)}.")


def build_steps(build: ImageBuild) -> list[cloudbuild_v1.BuildStep]:
    """One `docker build` per image, all started at once (wait_for "-")."""
    return [
        cloudbuild_v1.BuildStep(
            id=f"build-{name}", name=DOCKER_BUILDER, wait_for=["-"],
            args=["build", "--file", DOCKERFILES[name], "--tag", build.uri(name), "."])
        for name in build.images
    ]


def create_build_request(build: ImageBuild) -> cloudbuild_v1.CreateBuildRequest:
    """The CreateBuildRequest: build every image from the uploaded context, then push them."""
    check_build(build)
    options = cloudbuild_v1.BuildOptions(
        machine_type=cloudbuild_v1.BuildOptions.MachineType[build.machine_type],
        disk_size_gb=build.disk_size_gb,
        # Logs go to Cloud Logging only: no logs bucket to create, and it is what Cloud Build
        # requires when the build runs as a user-managed service account.
        logging=cloudbuild_v1.BuildOptions.LoggingMode.CLOUD_LOGGING_ONLY,
    )
    job = cloudbuild_v1.Build(
        source=cloudbuild_v1.Source(storage_source=cloudbuild_v1.StorageSource(
            bucket=build.source_bucket, object_=build.source_object)),
        steps=build_steps(build),
        images=[build.uri(name) for name in build.images],  # pushed when every step succeeded
        timeout=duration_pb2.Duration(seconds=round(build.timeout_hours * 3600)),
        options=options,
        tags=[DEFAULT_REPOSITORY] + ([build.repository] if build.repository
                                     != DEFAULT_REPOSITORY else []),
        service_account=build.service_account or "",
    )
    return cloudbuild_v1.CreateBuildRequest(parent=build.parent, project_id=build.project,
                                            build=job)


def request_json(request: cloudbuild_v1.CreateBuildRequest) -> dict:
    """The request as the REST API receives it (camelCase, enum names), as a dict."""
    return json.loads(cloudbuild_v1.CreateBuildRequest.to_json(
        request, use_integers_for_enums=False, always_print_fields_with_no_presence=False))


def build_console_url(build_id: str, project: str, region: str) -> str:
    return (f"https://console.cloud.google.com/cloud-build/builds;region={region}/{build_id}"
            f"?project={project}")
