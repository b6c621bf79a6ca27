"""`python -m launch train`: the trainer as a Vertex AI custom job.

Everything after `--` (and every --trainer_arg) goes to `python -m trainer` unchanged, after
--data_dir and --job_dir. The request is built by launch.train.request and sent by
launch.train.submit.

The job runs this project's trainer image (containers/trainer-gpu.Dockerfile, or
trainer-tpu.Dockerfile on TPU) at REGION-docker.pkg.dev/PROJECT/vggface-emotion/...:VERSION, the
address `python -m launch image` pushes to, unless --container_image names another one. The
prebuilt Vertex AI TensorFlow images (which install our sdist) are used only when
--executor_image_uri names one: those we know of have Python 3.10 and TensorFlow <= 2.17.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys

from absl import flags

from launch.common import cloud_imports, images, package
from launch.common.errors import load_credentials
from launch.common.flags import cloud_flags
from launch.common.validation import check_region, gcs_bucket, parse_labels, require_gcs_uri
from launch.train import trainer_flags


def define_flags() -> flags.FlagValues:
    """A fresh set of this command's flags, so that each call of main starts from defaults."""
    fv = cloud_flags("the Vertex AI job",
                     "the CreateCustomJob request as JSON")
    flags.DEFINE_string("data_dir", None, "gs:// output directory of `launch preprocess`.",
                        flag_values=fv)
    flags.DEFINE_string("job_dir", None, "gs:// directory for this run's checkpoints, logs and "
                        "model (also the job's base output directory).", flag_values=fv)
    flags.DEFINE_string("display_name", None, "Job name in the console (default: "
                        "vggface-emotion-train-<UTC timestamp>).", flag_values=fv)
    flags.DEFINE_string("machine_type", "n1-standard-8", "Machine type of every replica "
                        "(cloud-tpu for TPU v2/v3).", flag_values=fv)
    flags.DEFINE_string("accelerator_type", None, "e.g. NVIDIA_TESLA_T4, NVIDIA_L4, "
                        "NVIDIA_TESLA_V100, TPU_V3 (default: none, CPU only).", flag_values=fv)
    flags.DEFINE_integer("accelerator_count", 1, "Accelerators per replica (8 for a TPU v2/v3 "
                         "host).", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("tpu_topology", None, "TPU slice topology, e.g. 2x2 (TPU v5e only).",
                        flag_values=fv)
    flags.DEFINE_integer("worker_count", 0, "Replicas besides the chief (multi-worker training; "
                         "each is billed like the chief).", lower_bound=0, flag_values=fv)
    flags.DEFINE_string("executor_image_uri", None, "Instead of a container image: a prebuilt "
                        "Vertex AI TensorFlow image that installs and runs our sdist (it must "
                        "have Python 3.11 and TensorFlow 2.21).", flag_values=fv)
    flags.DEFINE_string("container_image", None, "Image with this package installed, running "
                        "`python -m trainer`; {project}, {region} and {version} are filled in "
                        "(default: REGION-docker.pkg.dev/PROJECT/vggface-emotion/trainer-gpu:"
                        "VERSION, trainer-tpu on TPU: what `launch image` builds).",
                        flag_values=fv)
    flags.DEFINE_string("staging_dir", None, "gs:// directory for the uploaded sdist (default: "
                        "gs://<job_dir bucket>/staging).", flag_values=fv)
    flags.DEFINE_string("tensorboard", None, "Vertex AI TensorBoard instance (ID or resource name) "
                        "that shows the logs live; needs --service_account.", flag_values=fv)
    flags.DEFINE_string("service_account", None, "Service account the job runs as.",
                        flag_values=fv)
    flags.DEFINE_bool("spot", False, "Run on Spot VMs: much cheaper, may be preempted (the trainer "
                      "resumes from its backup).", flag_values=fv)
    flags.DEFINE_float("timeout_hours", None, "Stop the job after this long (default: Vertex AI's "
                       "7 days).", lower_bound=0.01, flag_values=fv)
    flags.DEFINE_list("labels", [], "key=value,... labels of the job (billing reports group "
                      "costs by them).", flag_values=fv)
    flags.DEFINE_string("network", None, "VPC network to peer the job with: projects/"
                        "PROJECT_NUMBER/global/networks/NAME.", flag_values=fv)
    flags.DEFINE_float("collective_timeout_seconds", 600, "Multi-worker jobs: passed to the "
                       "trainer (unless given after `--`) so that a lost worker fails the job "
                       "after this long instead of hanging every billed replica; 0: wait "
                       "forever.", lower_bound=0, flag_values=fv)
    flags.DEFINE_multi_string("trainer_arg", [], "A trainer flag for the job (repeatable; for "
                              "flagfiles). Flags after `--` are added after these.",
                              flag_values=fv)
    flags.DEFINE_bool("wait", False, "Poll the job until it ends; exit 0 only if it succeeded.",
                      flag_values=fv)
    flags.DEFINE_integer("poll_seconds", 60, "Seconds between polls with --wait.", lower_bound=1,
                         flag_values=fv)
    return fv


USAGE = """\
python -m launch train --project P --region R --data_dir gs://.../records \\
    --job_dir gs://.../run1 [--flagfile=configs/hardware/vertex_gpu.cfg] [--dry_run] [--wait] \\
    [-- trainer flags]"""


def default_display_name(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return f"vggface-emotion-train-{now:%Y%m%d-%H%M%S}"


def split_trainer_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(launcher argv, trainer args): the trainer's are those after the first `--`."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def expand_flagfiles(args: list[str]) -> list[str]:
    """Trainer flags with any --flagfile read here: the job's machines do not have our files."""
    return flags.FlagValues().read_flags_from_files(args, force_gnu=True)


def import_vertex():
    """launch.train.request and launch.train.submit; they need the `cloud` extra."""
    return (cloud_imports.require("launch.train.request", "train"),
            cloud_imports.require("launch.train.submit", "train"))


def container_image(fv: flags.FlagValues, kind: str) -> str | None:
    """The image the job runs: --container_image (placeholders filled), else ours for `kind`;
    None with --executor_image_uri (a prebuilt image runs our sdist)."""
    if fv.container_image and fv.executor_image_uri:
        raise flags.ValidationError("give --container_image or --executor_image_uri, not both")
    if fv.executor_image_uri:
        return None
    version = package.read_distribution().version
    if fv.container_image:
        return images.expand_image(fv.container_image, project=fv.project, region=fv.region,
                                   version=version)
    name = "trainer-tpu" if kind == "tpu" else "trainer-gpu"
    return images.image_uri(name, fv.project, fv.region, version)


def spec_from_flags(fv: flags.FlagValues, train_request, trainer_args: list[str]):
    for name in ("project", "region", "data_dir", "job_dir"):
        if not fv[name].value:
            raise flags.ValidationError(f"--{name} is required")
    hardware = train_request.Hardware(
        machine_type=fv.machine_type,
        accelerator_type=fv.accelerator_type,
        accelerator_count=fv.accelerator_count if fv.accelerator_type else 0,
        tpu_topology=fv.tpu_topology)
    spec = train_request.TrainingSpec(
        project=fv.project,
        region=check_region(fv.region),
        display_name=fv.display_name or default_display_name(),
        data_dir=require_gcs_uri(fv.data_dir, "data_dir"),
        job_dir=require_gcs_uri(fv.job_dir, "job_dir"),
        hardware=hardware,
        worker_count=fv.worker_count,
        trainer_args=tuple(expand_flagfiles(fv.trainer_arg + trainer_args)),
        executor_image_uri=fv.executor_image_uri,
        container_image=container_image(fv, hardware.kind),
        tensorboard=fv.tensorboard,
        service_account=fv.service_account,
        spot=fv.spot,
        timeout_hours=fv.timeout_hours,
        labels=parse_labels(fv.labels),
        network=fv.network,
        collective_timeout_seconds=fv.collective_timeout_seconds,
    )
    return with_checked_trainer_args(spec, train_request)


def with_checked_trainer_args(spec, train_request):
    """spec, once its trainer command line parses as the trainer would parse it (else
    flags.ValidationError), with a run id when that command line starts over."""
    config = trainer_flags.parse_trainer_args(train_request.trainer_command_args(spec))
    if config.loop.start_over and not config.loop.run_id:
        return dataclasses.replace(spec, run_id=trainer_flags.new_run_id(spec.display_name))
    return spec


def staging_dir_from_flags(fv: flags.FlagValues) -> str:
    if fv.staging_dir:
        return require_gcs_uri(fv.staging_dir, "staging_dir")
    return f"gs://{gcs_bucket(fv.job_dir)}/staging"


def dry_run(train_request, train_submit, spec, staging_dir: str) -> int:
    uri, distribution = train_submit.planned_package(spec, staging_dir)
    print(train_request.request_json(train_request.create_request(spec, uri)))
    if distribution is not None:
        problem = train_request.python_mismatch(train_request.executor_image(spec),
                                         distribution.requires_python)
        if problem:
            print(f"WARNING: a real submission would stop here: {problem}", file=sys.stderr)
    return 0


def submit(fv: flags.FlagValues, train_submit, spec, staging_dir: str) -> int:
    from google.cloud import storage

    credentials = load_credentials()
    if spec.container_image:
        from launch.common import registry

        registry.check_image_exists(
            registry.authorized_session(credentials), spec.container_image,
            f"python -m launch image --project={spec.project} --region={spec.region}")
    storage_client = storage.Client(project=spec.project, credentials=credentials)
    client = train_submit.job_client(spec.region, credentials)
    job = train_submit.submit_training(spec, staging_dir, storage_client=storage_client,
                                        job_client=client)
    if not fv.wait:
        return 0
    final = train_submit.wait_for_job(client, job.name, fv.poll_seconds)
    if final.state.name != "JOB_STATE_SUCCEEDED":
        print(f"The job ended in {final.state.name}: {final.error.message}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """argv[0] is the command name; returns the exit code."""
    fv = define_flags()
    launcher_argv, trainer_args = split_trainer_args(argv)
    if {"-h", "--help", "--helpfull"} & set(launcher_argv):
        print(USAGE + "\n\n" + fv.get_help())
        return 0
    fv(launcher_argv)
    train_request, train_submit = import_vertex()
    spec = spec_from_flags(fv, train_request, trainer_args)
    staging_dir = staging_dir_from_flags(fv)
    if fv.dry_run:
        return dry_run(train_request, train_submit, spec, staging_dir)
    return submit(fv, train_submit, spec, staging_dir)
