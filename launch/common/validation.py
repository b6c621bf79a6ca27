"""Checks of launcher flags that catch a mistake before anything is built, uploaded or billed."""

import difflib
import re

from launch.common.errors import LaunchError

# Google Cloud regions (cloud.google.com/about/locations, 2025). Dataflow runs in all of them and
# Vertex AI training in most; the list only guards against typos, so a new region goes here.
GOOGLE_CLOUD_REGIONS = (
    "africa-south1",
    "asia-east1", "asia-east2", "asia-northeast1", "asia-northeast2", "asia-northeast3",
    "asia-south1", "asia-south2", "asia-southeast1", "asia-southeast2",
    "australia-southeast1", "australia-southeast2",
    "europe-central2", "europe-north1", "europe-north2", "europe-southwest1", "europe-west1",
    "europe-west2", "europe-west3", "europe-west4", "europe-west6", "europe-west8",
    "europe-west9", "europe-west10", "europe-west12",
    "me-central1", "me-central2", "me-west1",
    "northamerica-northeast1", "northamerica-northeast2", "northamerica-south1",
    "southamerica-east1", "southamerica-west1",
    "us-central1", "us-east1", "us-east4", "us-east5", "us-south1",
    "us-west1", "us-west2", "us-west3", "us-west4",
)
# Dataflow job names: lower-case letters, digits and hyphens, starting with a letter.
_JOB_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def check_region(region: str) -> str:
    """Returns `region` if it is a Google Cloud region, else says which one was probably meant."""
    if region in GOOGLE_CLOUD_REGIONS:
        return region
    guesses = difflib.get_close_matches(region or "", GOOGLE_CLOUD_REGIONS, n=2, cutoff=0.8)
    hint = f" Did you mean {' or '.join(guesses)}?" if guesses else ""
    raise LaunchError(
        f"--region={region!r} is not a Google Cloud region.{hint} Regions look like "
        "'us-central1' or 'europe-west4' (a region, not a zone such as 'us-central1-a'); "
        "see https://cloud.google.com/vertex-ai/docs/general/locations."
    )


def require_gcs_uri(value: str, flag: str) -> str:
    """Returns `value` if it is gs://bucket[/path]: cloud workers cannot see this machine's disk."""
    if not value or not value.startswith("gs://") or not gcs_bucket(value):
        raise LaunchError(
            f"--{flag}={value!r} must be a Cloud Storage path (gs://bucket/...): the cloud job "
            "runs on Google's machines, which cannot read or write this computer's files. "
            "Copy data with `gcloud storage cp LOCAL gs://BUCKET/PATH`."
        )
    return value.rstrip("/")


def gcs_bucket(uri: str) -> str:
    """'gs://bucket/a/b' -> 'bucket'."""
    return uri.removeprefix("gs://").split("/", 1)[0]


def check_dataflow_job_name(name: str) -> str:
    if not _JOB_NAME.fullmatch(name):
        raise LaunchError(
            f"--job_name={name!r} is not a valid Dataflow job name: use lower-case letters, "
            "digits and hyphens, starting with a letter and ending with a letter or digit."
        )
    return name


# Google Cloud resource labels (cloud.google.com/resource-manager/docs/labels-overview).
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
MAX_LABELS = 64


def parse_labels(items: list[str], flag: str = "labels") -> tuple[tuple[str, str], ...]:
    """['team=ml', 'run=exp1'] -> (('team', 'ml'), ('run', 'exp1')), checked as Google does."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise LaunchError(f"--{flag}: {item!r} is not key=value (e.g. --{flag}=team=ml,"
                              "run=exp1).")
        if not _LABEL_KEY.fullmatch(key):
            raise LaunchError(f"--{flag}: label key {key!r} must start with a lower-case letter "
                              "and have at most 63 lower-case letters, digits, '_' or '-'.")
        if not _LABEL_VALUE.fullmatch(value):
            raise LaunchError(f"--{flag}: label value {value!r} (of {key}) may have at most 63 "
                              "lower-case letters, digits, '_' or '-'.")
        if key in labels:
            raise LaunchError(f"--{flag}: label {key!r} is given twice.")
        labels[key] = value
    if len(labels) > MAX_LABELS:
        raise LaunchError(f"--{flag}: {len(labels)} labels; Google Cloud allows {MAX_LABELS}.")
    return tuple(labels.items())


def check_accelerator(accelerator_type: str | None) -> None:
    """LaunchError unless `accelerator_type` is None or a name Vertex AI knows (an
    aiplatform_v1.AcceleratorType)."""
    if not accelerator_type:
        return
    from google.cloud import aiplatform_v1  # the `cloud` extra: only where accelerators are

    names = [name for name in aiplatform_v1.AcceleratorType.__members__
             if name != "ACCELERATOR_TYPE_UNSPECIFIED"]
    if accelerator_type not in names:
        raise LaunchError(f"--accelerator_type={accelerator_type!r} is not one of "
                          f"{', '.join(names)}.")
