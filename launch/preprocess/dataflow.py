"""beam_preprocess on Dataflow: the pipeline's argv for DataflowRunner, and running it.

The pipeline itself is beam_preprocess.pipeline's; this module only chooses its options.
"""

from __future__ import annotations

import copy
import dataclasses
import json

from launch.common.errors import LaunchError, explained_cloud_errors, load_credentials
from launch.common.package import SETUP_PY, require_setup_py
from launch.common.validation import gcs_bucket

PROGRAM = "beam_preprocess"


@dataclasses.dataclass(frozen=True)
class DataflowSettings:
    project: str
    region: str
    input: str
    output_dir: str
    job_name: str
    worker_machine_type: str
    max_num_workers: int
    temp_location: str | None = None  # default: gs://<output bucket>/dataflow/temp
    staging_location: str | None = None  # default: gs://<output bucket>/dataflow/staging
    sdk_container_image: str | None = None  # an image with our package; replaces --setup_file
    num_workers: int | None = None
    service_account_email: str | None = None
    extra_args: tuple[str, ...] = ()  # beam_preprocess flags and further Beam options

    def location(self, kind: str) -> str:
        given = self.temp_location if kind == "temp" else self.staging_location
        return given or f"gs://{gcs_bucket(self.output_dir)}/dataflow/{kind}"


def pipeline_argv(settings: DataflowSettings) -> list[str]:
    """argv for beam_preprocess.pipeline.run: our flags, then Dataflow's, then pass-through."""
    argv = [
        PROGRAM,
        f"--input={settings.input}",
        f"--output_dir={settings.output_dir}",
        "--runner=DataflowRunner",
        f"--project={settings.project}",
        f"--region={settings.region}",
        f"--job_name={settings.job_name}",
        f"--temp_location={settings.location('temp')}",
        f"--staging_location={settings.location('staging')}",
        f"--worker_machine_type={settings.worker_machine_type}",
        f"--max_num_workers={settings.max_num_workers}",
    ]
    if settings.sdk_container_image:
        argv.append(f"--sdk_container_image={settings.sdk_container_image}")
        if not _passed(settings.extra_args, "sdk_location"):
            # The image has the SDK: workers must not install one staged from here.
            argv.append("--sdk_location=container")
    else:
        # Workers pip-install our sdist built from this file, so they import our modules.
        argv.append(f"--setup_file={require_setup_py(SETUP_PY)}")
    if settings.num_workers is not None:
        argv.append(f"--num_workers={settings.num_workers}")
    if settings.service_account_email:
        argv.append(f"--service_account_email={settings.service_account_email}")
    return argv + list(settings.extra_args)


def _passed(args, name: str) -> bool:
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in args)


def _preprocess_flag_copies():
    """Copies of beam_preprocess.pipeline's flags: parsing them leaves the global ones as they
    are (pipeline.run parses the process's flags itself)."""
    from absl import flags

    from beam_preprocess import pipeline

    preprocess_flags = flags.FlagValues()
    for flag in flags.FLAGS.get_flags_for_module(pipeline):
        preprocess_flags[flag.name] = copy.deepcopy(flag)
    return preprocess_flags


def check_passthrough(args: list[str], launcher_flags: list[str]) -> None:
    """Raises flags.Error (exit 2) for an argument that is neither a beam_preprocess flag nor a
    Beam pipeline option, before anything is built, staged or started.

    Beam itself would only log "Discarding unparseable args" and run with the default: a typo
    such as --image_szie=48 would preprocess at 224 px. The check is beam_preprocess's own
    (beam_preprocess.arguments), so that launcher and pipeline agree on what is known.
    """
    from beam_preprocess import arguments

    preprocess_flags = _preprocess_flag_copies()
    beam_args = preprocess_flags(["launch", *args], known_only=True)[1:]
    arguments.check_beam_arguments(beam_args, [*preprocess_flags, *launcher_flags])


def describe(argv: list[str]) -> str:
    """JSON of what the pipeline would get: its own flags and Beam's pipeline options.

    Splits argv with copies of beam_preprocess.pipeline's flags, as its run() does, so that the
    process's global flags stay untouched; contacts nothing.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    preprocess_flags = _preprocess_flag_copies()
    beam_args = preprocess_flags(argv, known_only=True)[1:]
    return json.dumps({
        "argv": argv,
        "beam_preprocess_flags": preprocess_flags.flag_values_dict(),
        "pipeline_options": PipelineOptions(beam_args).get_all_options(drop_default=True),
    }, indent=2)


def run(argv: list[str], image: str | None = None) -> None:
    """Runs the pipeline on Dataflow and waits for it (Beam logs the job's console link).

    `image` (the --sdk_container_image) is checked to exist first: workers that cannot pull it
    fail only after minutes of start-up.
    """
    from beam_preprocess import pipeline
    from beam_preprocess.errors import user_facing_message

    credentials = load_credentials()  # Beam would otherwise go on anonymously, failing later
    if image:
        from launch.common import registry

        registry.check_image_exists(
            registry.authorized_session(credentials), image,
            "python -m launch image --project=PROJECT --region=REGION --images=dataflow-worker")
    try:
        with explained_cloud_errors("Running the Dataflow job"):
            pipeline.run(argv)
    except LaunchError:
        raise
    except Exception as error:  # noqa: BLE001 - expected failures become one message
        message = user_facing_message(error)
        if message is None:
            raise
        raise LaunchError(message) from None
