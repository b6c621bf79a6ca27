"""`python -m launch image`: build this project's container images with Cloud Build and push them
to Artifact Registry (see launch.common.images for the images and their addresses)."""

from __future__ import annotations

import datetime
import json
import sys

from absl import flags

from launch.common import images, package
from launch.common.errors import LaunchError, load_credentials
from launch.common.flags import cloud_flags
from launch.common.validation import check_region, gcs_bucket, require_gcs_uri
from launch.image import dockerignore

USAGE = """\
python -m launch image --project P --region R [--repository vggface-emotion] [--tag VERSION] \\
    [--images trainer-gpu,trainer-tpu,dataflow-worker,predictor] [--dry_run] [--nowait]"""


def define_flags() -> flags.FlagValues:
    fv = cloud_flags("the Artifact Registry repository and of the build (the jobs' region)",
                     "the CreateBuildRequest and what would be uploaded, as JSON")
    flags.DEFINE_string("repository", images.DEFAULT_REPOSITORY, "Artifact Registry Docker "
                        "repository (create it once: gcloud artifacts repositories create "
                        "vggface-emotion --repository-format=docker --location=REGION).",
                        flag_values=fv)
    flags.DEFINE_string("tag", None, "Image tag (default: the package version in setup.py, "
                        "which the shipped configs use).", flag_values=fv)
    flags.DEFINE_list("images", list(images.DOCKERFILES), "Images to build.", flag_values=fv)
    flags.DEFINE_string("staging_dir", None, "gs:// directory for the uploaded build context "
                        "(default: gs://PROJECT_cloudbuild/source, as gcloud builds submit).",
                        flag_values=fv)
    flags.DEFINE_string("machine_type", "E2_HIGHCPU_8", "Cloud Build machine type.",
                        flag_values=fv)
    flags.DEFINE_integer("disk_size_gb", 200, "Build disk size (the four images need ~30 GB "
                         "while they build at once).", lower_bound=10, flag_values=fv)
    flags.DEFINE_float("timeout_hours", 2.0, "Cancel the build after this long.",
                       lower_bound=0.1, flag_values=fv)
    flags.DEFINE_string("service_account", None, "Service account email the build runs as "
                        "(default: the project's Cloud Build default).", flag_values=fv)
    flags.DEFINE_bool("wait", True, "Follow the build until it ends (--nowait: start it and "
                      "return).", flag_values=fv)
    flags.DEFINE_integer("poll_seconds", 30, "Seconds between polls while waiting.",
                         lower_bound=1, flag_values=fv)
    return fv


def timestamp(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%d-%H%M%S}"


def service_account_resource(email: str | None, project: str) -> str | None:
    if not email or email.startswith("projects/"):
        return email
    return f"projects/{project}/serviceAccounts/{email}"


def build_from_flags(fv: flags.FlagValues, archive: dockerignore.SourceArchive,
                     now: datetime.datetime | None = None) -> images.ImageBuild:
    for name in ("project", "region"):
        if not fv[name].value:
            raise flags.ValidationError(f"--{name} is required")
    tag = images.check_tag(fv.tag or package.read_distribution().version)
    staging = require_gcs_uri(fv.staging_dir or f"gs://{fv.project}_cloudbuild/source",
                              "staging_dir")
    prefix = staging.removeprefix(f"gs://{gcs_bucket(staging)}").strip("/")
    name = f"vggface-emotion-{tag}-{timestamp(now)}-{archive.sha256[:8]}.tgz"
    build = images.ImageBuild(
        project=fv.project,
        region=check_region(fv.region),
        tag=tag,
        source_bucket=gcs_bucket(staging),
        source_object=f"{prefix}/{name}" if prefix else name,
        repository=images.check_repository(fv.repository),
        images=tuple(fv.images),
        machine_type=fv.machine_type,
        disk_size_gb=fv.disk_size_gb,
        timeout_hours=fv.timeout_hours,
        service_account=service_account_resource(fv.service_account, fv.project),
    )
    images.check_build(build)
    return build


def describe(build: images.ImageBuild, archive: dockerignore.SourceArchive) -> str:
    return json.dumps({
        "sourceArchive": {
            "uploadTo": build.source_uri,
            "files": len(archive.files),
            "bytes": len(archive.data),
            "sha256": archive.sha256,
            "leftOutByDockerignore": list(dockerignore.iter_excluded_top_level(
                package.REPO_ROOT)),
        },
        "images": {name: build.uri(name) for name in build.images},
        "createBuildRequest": images.request_json(images.create_build_request(build)),
    }, indent=2)


def submit(fv: flags.FlagValues, build: images.ImageBuild,
           archive: dockerignore.SourceArchive) -> int:
    from google.cloud import storage

    from launch.image import submit as image_submit

    credentials = load_credentials()
    storage_client = storage.Client(project=build.project, credentials=credentials)
    client = image_submit.build_client(credentials)
    created = image_submit.submit_build(build, archive, storage_client=storage_client,
                                        build_client=client)
    if not fv.wait:
        return 0
    final = image_submit.wait_for_build(client, build, created.id, fv.poll_seconds)
    if final.status != final.Status.SUCCESS:
        print(f"The build ended in {final.status.name}: {final.status_detail}", file=sys.stderr)
        return 1
    for image in final.results.images:
        print(f"Pushed {image.name}@{image.digest}")
    return 0


def main(argv: list[str]) -> int:
    fv = define_flags()
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(USAGE + "\n\n" + fv.get_help())
        return 0
    extra = fv(argv)[1:]  # unknown flags raise flags.UnrecognizedFlagError here
    if extra:
        raise flags.ValidationError(f"unexpected argument {extra[0]!r}")
    archive = dockerignore.build_archive(package.REPO_ROOT)
    missing = [images.DOCKERFILES[name] for name in fv.images
               if name in images.DOCKERFILES and images.DOCKERFILES[name] not in archive.files]
    if missing:
        raise LaunchError(f"{', '.join(missing)} not in the build context: is it excluded by "
                          ".dockerignore, or is this not a clone of the repository?")
    build = build_from_flags(fv, archive)
    if fv.dry_run:
        print(describe(build, archive))
        return 0
    return submit(fv, build, archive)
