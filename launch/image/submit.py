"""Building the images: the build context to GCS, the Cloud Build job, then maybe waiting."""

from __future__ import annotations

import time
from collections.abc import Callable

from google.cloud.devtools import cloudbuild_v1

from launch.common import images
from launch.common.errors import explained_cloud_errors
from launch.common.polling import wait_until_final
from launch.image.dockerignore import SourceArchive

FINAL_STATUSES = frozenset({
    cloudbuild_v1.Build.Status.SUCCESS,
    cloudbuild_v1.Build.Status.FAILURE,
    cloudbuild_v1.Build.Status.INTERNAL_ERROR,
    cloudbuild_v1.Build.Status.TIMEOUT,
    cloudbuild_v1.Build.Status.CANCELLED,
    cloudbuild_v1.Build.Status.EXPIRED,
})


def build_client(credentials) -> cloudbuild_v1.CloudBuildClient:
    return cloudbuild_v1.CloudBuildClient(credentials=credentials)


def upload_source(storage_client, archive: SourceArchive, build: images.ImageBuild) -> str:
    with explained_cloud_errors(
            f"Uploading the build context to {build.source_uri}",
            not_found_hint=f"\nDoes the bucket exist? Create it with `gcloud storage buckets "
            f"create gs://{build.source_bucket} --location={build.region}`, or pass "
            "--staging_dir=gs://YOUR_BUCKET/cloudbuild."):
        blob = storage_client.bucket(build.source_bucket).blob(build.source_object)
        blob.upload_from_string(archive.data, content_type="application/gzip")
    return build.source_uri


def submit_build(build: images.ImageBuild, archive: SourceArchive, *, storage_client,
                 build_client, echo: Callable[[str], None] = print) -> cloudbuild_v1.Build:
    """Uploads the context and starts the build; returns the Build as Cloud Build created it."""
    request = images.create_build_request(build)  # checks the settings before any upload
    upload_source(storage_client, archive, build)
    echo(f"Uploaded the build context ({len(archive.files)} files, {len(archive.data)} bytes) "
         f"to {build.source_uri}")
    with explained_cloud_errors(
            f"Starting the Cloud Build job in {build.parent}",
            not_found_hint="\nIs the Cloud Build API enabled? `gcloud services enable "
            "cloudbuild.googleapis.com artifactregistry.googleapis.com`"):
        operation = build_client.create_build(request=request)
    created = operation.metadata.build
    echo(f"Started Cloud Build job {created.id} for: "
         + ", ".join(images.DOCKERFILES[name].split("/")[-1] for name in build.images))
    logs = created.log_url or images.build_console_url(created.id, build.project, build.region)
    echo(f"Logs: {logs}")
    return created


def wait_for_build(build_client, build: images.ImageBuild, build_id: str, poll_seconds: float,
                   *, sleep: Callable[[float], None] = time.sleep,
                   echo: Callable[[str], None] = print) -> cloudbuild_v1.Build:
    """Polls the build until it ends, echoing each change of status; returns the final Build."""
    request = {"name": f"{build.parent}/builds/{build_id}", "project_id": build.project,
               "id": build_id}
    return wait_until_final(lambda: build_client.get_build(request=request),
                            lambda current: current.status, FINAL_STATUSES, poll_seconds,
                            f"build {build_id}", sleep=sleep, echo=echo)
