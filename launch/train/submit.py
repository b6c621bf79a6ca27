"""Sending a training job to Vertex AI: our sdist to GCS, the CustomJob, then maybe waiting."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from google.cloud import aiplatform_v1

from launch.common import package
from launch.common.clients import regional_client
from launch.common.errors import LaunchError, explained_cloud_errors
from launch.common.polling import wait_until_final
from launch.common.validation import gcs_bucket
from launch.train import request as train_request

FINAL_STATES = frozenset({
    aiplatform_v1.JobState.JOB_STATE_SUCCEEDED,
    aiplatform_v1.JobState.JOB_STATE_FAILED,
    aiplatform_v1.JobState.JOB_STATE_CANCELLED,
    aiplatform_v1.JobState.JOB_STATE_EXPIRED,
    aiplatform_v1.JobState.JOB_STATE_PARTIALLY_SUCCEEDED,
})


def job_client(region: str, credentials) -> aiplatform_v1.JobServiceClient:
    return regional_client(aiplatform_v1.JobServiceClient, region, credentials)


def planned_package(spec: train_request.TrainingSpec,
                    staging_dir: str) -> tuple[str, package.Distribution | None]:
    """Where our sdist goes in GCS, and what it is; ("", None) for a custom container."""
    if not spec.runs_sdist:
        return "", None
    distribution = package.read_distribution()
    uri = f"{staging_dir.rstrip('/')}/{spec.display_name}/{distribution.sdist_filename}"
    return uri, distribution


def submit_training(spec: train_request.TrainingSpec, staging_dir: str, *, storage_client,
                    job_client, echo: Callable[[str], None] = print) -> aiplatform_v1.CustomJob:
    """Uploads our sdist (unless spec runs a custom container) and creates the CustomJob."""
    uri, distribution = planned_package(spec, staging_dir)
    request = train_request.create_request(spec, uri)  # checks the spec before anything is uploaded
    if distribution is not None:
        problem = train_request.python_mismatch(train_request.executor_image(spec),
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
    echo(f"Console: {train_request.console_url(job.name)}")
    echo(f"Outputs: {spec.job_dir}")
    return job


def wait_for_job(job_client, name: str, poll_seconds: float, *,
                 sleep: Callable[[float], None] = time.sleep,
                 echo: Callable[[str], None] = print) -> aiplatform_v1.CustomJob:
    """Polls the job until it ends, echoing each change of state; returns the final job."""
    return wait_until_final(lambda: job_client.get_custom_job(name=name),
                            lambda job: job.state, FINAL_STATES, poll_seconds, name,
                            sleep=sleep, echo=echo)
