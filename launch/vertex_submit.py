"""Sending a training job to Vertex AI: our sdist to GCS, the CustomJob, then maybe waiting."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from google.cloud import aiplatform_v1

from launch import package, vertex
from launch.errors import LaunchError, explained_cloud_errors
from launch.validation import gcs_bucket

FINAL_STATES = frozenset({
    aiplatform_v1.JobState.JOB_STATE_SUCCEEDED,
    aiplatform_v1.JobState.JOB_STATE_FAILED,
    aiplatform_v1.JobState.JOB_STATE_CANCELLED,
    aiplatform_v1.JobState.JOB_STATE_EXPIRED,
    aiplatform_v1.JobState.JOB_STATE_PARTIALLY_SUCCEEDED,
})


def job_client(region: str, credentials) -> aiplatform_v1.JobServiceClient:
    """A client of the regional endpoint, where the region's jobs live."""
    return aiplatform_v1.JobServiceClient(
        credentials=credentials,
        client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"})


def planned_package(spec: vertex.TrainingSpec,
                    staging_dir: str) -> tuple[str, package.Distribution | None]:
    """Where our sdist goes in GCS, and what it is; ("", None) for a custom container."""
    if not spec.runs_sdist:
        return "", None
    distribution = package.read_distribution()
    uri = f"{staging_dir.rstrip('/')}/{spec.display_name}/{distribution.sdist_filename}"
    return uri, distribution


def submit_training(spec: vertex.TrainingSpec, staging_dir: str, *, storage_client, job_client,
                    echo: Callable[[str], None] = print) -> aiplatform_v1.CustomJob:
    """Uploads our sdist (unless spec runs a custom container) and creates the CustomJob."""
    uri, distribution = planned_package(spec, staging_dir)
    request = vertex.create_request(spec, uri)  # checks the spec before anything is uploaded
    if distribution is not None:
        problem = vertex.python_mismatch(vertex.executor_image(spec),
                                         distribution.requires_python)
        if problem:
            raise LaunchError(problem)
        with tempfile.TemporaryDirectory() as out_dir:
            sdist = package.build_sdist(Path(out_dir))
            with explained_cloud_errors(
                    f"Uploading {sdist.name} to {uri}",
                    not_found_hint="\nDoes the bucket exist? Create it with `gcloud storage "
                    f"buckets create gs://{gcs_bucket(uri)} --location={spec.region}`."):
                package.upload(storage_client, sdist, uri)
        echo(f"Uploaded our code to {uri}")
    with explained_cloud_errors(f"Creating the Vertex AI job in {spec.parent}"):
        job = job_client.create_custom_job(parent=request.parent, custom_job=request.custom_job)
    echo(f"Created Vertex AI custom job {job.name}")
    echo(f"Console: {vertex.console_url(job.name)}")
    echo(f"Outputs: {spec.job_dir}")
    return job


def wait_for_job(job_client, name: str, poll_seconds: float, *,
                 sleep: Callable[[float], None] = time.sleep,
                 echo: Callable[[str], None] = print) -> aiplatform_v1.CustomJob:
    """Polls the job until it ends, echoing each change of state; returns the final job."""
    last_state = None
    while True:
        with explained_cloud_errors(f"Reading the state of {name}"):
            job = job_client.get_custom_job(name=name)
        if job.state != last_state:
            echo(f"{job.state.name}")
            last_state = job.state
        if job.state in FINAL_STATES:
            return job
        sleep(poll_seconds)
