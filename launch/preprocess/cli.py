"""`python -m launch preprocess`: beam_preprocess on Dataflow.

Flags not defined here (beam_preprocess's --num_shards, --image_size, --labels, ..., and any Beam
pipeline option) are passed to the pipeline untouched.
"""

from __future__ import annotations

import datetime

from absl import flags

from launch.common import images, package
from launch.common.flags import cloud_flags
from launch.common.validation import check_dataflow_job_name, check_region, require_gcs_uri
from launch.preprocess import dataflow

USAGE = """\
python -m launch preprocess --project P --region R --input gs://.../fer2013.csv \\
    --output_dir gs://.../records [--flagfile=configs/preprocess/dataflow.cfg] [--dry_run] \\
    [beam_preprocess flags] [Beam pipeline options]"""


def define_flags() -> flags.FlagValues:
    """A fresh set of this command's flags, so that each call of main starts from defaults."""
    fv = cloud_flags("the Dataflow job",
                     "the pipeline's flags and Beam options as JSON")
    flags.DEFINE_string("input", None, "gs:// path of fer2013.csv.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "gs:// directory for the TFRecords and manifest.",
                        flag_values=fv)
    flags.DEFINE_string("job_name", None, "Dataflow job name (default: "
                        "vggface-emotion-preprocess-<UTC timestamp>).", flag_values=fv)
    flags.DEFINE_string("temp_location", None, "gs:// temp dir (default: <output bucket>/"
                        "dataflow/temp).", flag_values=fv)
    flags.DEFINE_string("staging_location", None, "gs:// staging dir (default: <output "
                        "bucket>/dataflow/staging).", flag_values=fv)
    flags.DEFINE_string("worker_machine_type", "n1-standard-2", "Compute Engine machine type "
                        "of each worker: the price per worker-hour.", flag_values=fv)
    flags.DEFINE_integer("max_num_workers", 4, "Autoscaling ceiling: caps the number of "
                         "workers billed at once.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("num_workers", None, "Workers to start with (default: Dataflow "
                         "decides).", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("sdk_container_image", None, "Worker image with this package "
                        "installed, e.g. REGION-docker.pkg.dev/PROJECT/vggface-emotion/"
                        "dataflow-worker:VERSION as `launch image` builds it ({project}, "
                        "{region}, {version} are filled in); without it workers install our "
                        "sdist built from setup.py (--setup_file).", flag_values=fv)
    flags.DEFINE_string("service_account_email", None, "Service account the workers run as.",
                        flag_values=fv)
    return fv


def default_job_name(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return f"vggface-emotion-preprocess-{now:%Y%m%d-%H%M%S}"


def passed_value(args: list[str], name: str) -> str | None:
    """The value of a pass-through flag given as --name=value or --name value."""
    for i, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    return None


def settings_from_flags(fv: flags.FlagValues,
                        passthrough: list[str]) -> dataflow.DataflowSettings:
    for name in ("project", "region", "input", "output_dir"):
        if not fv[name].value:
            raise flags.ValidationError(f"--{name} is required")
    ferplus_csv = passed_value(passthrough, "ferplus_csv")
    if ferplus_csv is not None:  # Dataflow's workers read it, like --input
        require_gcs_uri(ferplus_csv, "ferplus_csv")
    return dataflow.DataflowSettings(
        project=fv.project,
        region=check_region(fv.region),
        input=require_gcs_uri(fv.input, "input"),
        output_dir=require_gcs_uri(fv.output_dir, "output_dir"),
        job_name=check_dataflow_job_name(fv.job_name or default_job_name()),
        worker_machine_type=fv.worker_machine_type,
        max_num_workers=fv.max_num_workers,
        temp_location=fv.temp_location and require_gcs_uri(fv.temp_location, "temp_location"),
        staging_location=(fv.staging_location
                          and require_gcs_uri(fv.staging_location, "staging_location")),
        sdk_container_image=fv.sdk_container_image and images.expand_image(
            fv.sdk_container_image, project=fv.project, region=fv.region,
            version=package.read_distribution().version, flag="sdk_container_image"),
        num_workers=fv.num_workers,
        service_account_email=fv.service_account_email,
        extra_args=tuple(passthrough),
    )


def main(argv: list[str]) -> int:
    """argv[0] is the command name; returns the exit code."""
    fv = define_flags()
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(USAGE + "\n\n" + fv.get_help())
        return 0
    passthrough = fv(argv, known_only=True)[1:]
    dataflow.check_passthrough(passthrough, list(fv))  # a typo fails here, before any upload
    settings = settings_from_flags(fv, passthrough)
    pipeline_argv = dataflow.pipeline_argv(settings)
    if fv.dry_run:
        print(dataflow.describe(pipeline_argv))
        return 0
    dataflow.run(pipeline_argv, image=settings.sdk_container_image)
    return 0
