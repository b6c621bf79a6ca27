"""The Vertex AI CustomJob that runs `python -m trainer`: built here as a pure function of settings.

Submitting it is in launch.train.submit; this module contacts nothing.
"""

from __future__ import annotations

import dataclasses
import re

from google.cloud import aiplatform_v1
from google.protobuf import duration_pb2

from launch.common.errors import LaunchError
from launch.common.validation import check_accelerator

TRAINER_MODULE = "trainer"
# Vertex AI's prebuilt TensorFlow training images (cloud.google.com/vertex-ai/docs/training/
# pre-built-containers): the newest of each kind. Vertex accepts only these as executor images.
PREBUILT_IMAGES = {
    "cpu": "vertex-ai/training/tf-cpu.2-17.py310:latest",
    "gpu": "vertex-ai/training/tf-gpu.2-17.py310:latest",
    "tpu": "vertex-ai/training/tf-tpu.2-15.cp310:latest",
}
_IMAGE_PYTHON_TAG = re.compile(r"[.-](?:py|cp)3(\d{1,2})(?=[:.@-]|$)")
_NETWORK = re.compile(r"projects/[^/]+/global/networks/[^/]+")


@dataclasses.dataclass(frozen=True)
class Hardware:
    """One replica's machine. accelerator_type is an aiplatform_v1.AcceleratorType name or None."""

    machine_type: str
    accelerator_type: str | None = None
    accelerator_count: int = 0
    tpu_topology: str | None = None

    @property
    def kind(self) -> str:
        if not self.accelerator_type:
            return "cpu"
        return "tpu" if self.accelerator_type.startswith("TPU") else "gpu"


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """Everything the CustomJob depends on. trainer_args follow --data_dir/--job_dir."""

    project: str
    region: str
    display_name: str
    data_dir: str
    job_dir: str
    hardware: Hardware
    worker_count: int = 0  # replicas besides the chief, for MultiWorkerMirroredStrategy
    trainer_args: tuple[str, ...] = ()
    executor_image_uri: str | None = None  # prebuilt image running our sdist; default by kind
    container_image: str | None = None  # custom image with our package installed; replaces sdist
    tensorboard: str | None = None  # resource name or ID of a Vertex AI TensorBoard instance
    service_account: str | None = None
    spot: bool = False
    timeout_hours: float | None = None
    labels: tuple[tuple[str, str], ...] = ()  # CustomJob labels (billing reports group by them)
    network: str | None = None  # projects/NUMBER/global/networks/NAME (VPC peering)
    # Multi-worker only: the trainer's --collective_timeout_seconds unless trainer_args set it,
    # so that a lost worker ends the job instead of hanging every billed replica. 0: none.
    collective_timeout_seconds: float = 600.0
    # Names this submission for a trainer --start_over (see run_id_args): unique per
    # submission, the same in every restart of it; empty: no --run_id.
    run_id: str = ""

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def runs_sdist(self) -> bool:
        return self.container_image is None


def default_executor_image(kind: str, region: str) -> str:
    """The prebuilt image for cpu/gpu/tpu, from the Artifact Registry copy nearest to region."""
    if region.startswith("europe"):
        registry = "europe-docker.pkg.dev"
    elif region.startswith(("asia", "australia")):
        registry = "asia-docker.pkg.dev"
    else:
        registry = "us-docker.pkg.dev"
    return f"{registry}/{PREBUILT_IMAGES[kind]}"


def executor_image(spec: TrainingSpec) -> str:
    return spec.executor_image_uri or default_executor_image(spec.hardware.kind, spec.region)


def python_mismatch(image_uri: str, requires_python: str) -> str | None:
    """Why pip in this prebuilt image would refuse our package, or None if it would not.

    Prebuilt images name their Python in the tag (tf-gpu.2-17.py310); images without one pass.
    """
    from packaging.specifiers import SpecifierSet

    match = _IMAGE_PYTHON_TAG.search(image_uri)
    if not match or not requires_python:
        return None
    python = f"3.{match.group(1)}"
    if SpecifierSet(requires_python).contains(python):
        return None
    return (
        f"The executor image {image_uri} runs Python {python}, but this package requires "
        f"Python {requires_python} (setup.py python_requires), so pip in the job would refuse "
        "to install it after the machines are already paid for. Use --container_image with an "
        "image that has Python, TensorFlow and this package installed (docs/cloud.md), or an "
        "--executor_image_uri whose Python fits."
    )


def check_spec(spec: TrainingSpec) -> None:
    """Rejects combinations Vertex AI would reject later, or that cannot run our trainer."""
    hardware = spec.hardware
    check_accelerator(hardware.accelerator_type)
    if hardware.accelerator_type and hardware.accelerator_count < 1:
        raise LaunchError("--accelerator_count must be at least 1 with --accelerator_type.")
    if hardware.kind == "tpu" and spec.worker_count:
        raise LaunchError("A TPU job has a single TPU host: leave --worker_count at 0.")
    if spec.worker_count < 0:
        raise LaunchError("--worker_count cannot be negative.")
    if spec.tensorboard and not spec.service_account:
        raise LaunchError("--tensorboard needs --service_account: Vertex AI uploads the logs as "
                          "that account (give it roles/aiplatform.user and storage access).")
    if spec.network and not _NETWORK.fullmatch(spec.network):
        raise LaunchError(f"--network={spec.network!r} must be the full name "
                          "projects/PROJECT_NUMBER/global/networks/NETWORK (Vertex AI wants the "
                          "project number: `gcloud projects describe PROJECT "
                          "--format='value(projectNumber)'`).")
    if spec.collective_timeout_seconds < 0:
        raise LaunchError("--collective_timeout_seconds cannot be negative (0: no timeout).")
    for arg in spec.trainer_args:
        if arg.split("=", 1)[0] in ("--data_dir", "--job_dir"):
            raise LaunchError(f"Give {arg.split('=', 1)[0]} to the launcher, not after `--`: "
                              "the job's data and output paths come from the launcher's flags.")


def strategy_args(spec: TrainingSpec) -> list[str]:
    """The trainer's --strategy for this hardware, unless trainer_args choose one.

    The trainer's `auto` picks neither: without it every replica of a multi-worker job would
    train alone, and a TPU host would train on its CPU.
    """
    if any(arg.split("=", 1)[0] == "--strategy" for arg in spec.trainer_args):
        return []
    if spec.hardware.kind == "tpu":
        return ["--strategy=tpu"]
    if spec.worker_count:
        return ["--strategy=multi_worker_mirrored"]
    return []


def _given(spec: TrainingSpec, flag: str) -> bool:
    return any(arg.split("=", 1)[0] in (flag, "--no" + flag[2:]) for arg in spec.trainer_args)


def collective_timeout_args(spec: TrainingSpec) -> list[str]:
    """--collective_timeout_seconds for a multi-worker job, unless trainer_args give one.

    Without it a worker that dies (or is preempted) leaves the others waiting in an all-reduce
    forever, and every replica is billed until the job's timeout.
    """
    if not spec.worker_count or not spec.collective_timeout_seconds or \
            _given(spec, "--collective_timeout_seconds"):
        return []
    return [f"--collective_timeout_seconds={spec.collective_timeout_seconds:g}"]


def trainer_command_args(spec: TrainingSpec) -> list[str]:
    """The arguments of `python -m trainer` in every replica of the job."""
    return [f"--data_dir={spec.data_dir}", f"--job_dir={spec.job_dir}",
            *strategy_args(spec), *collective_timeout_args(spec), *run_id_args(spec),
            *spec.trainer_args]


def run_id_args(spec: TrainingSpec) -> list[str]:
    """--run_id when the launcher named the submission (a --start_over job, see TrainingSpec).

    Vertex AI restarts a preempted or failed replica with the job's arguments unchanged, so a
    bare --start_over would discard the run's own backups at every restart. With a run id the
    trainer starts over once: a rerun of the same run id resumes (trainer/run_record.py).
    """
    return [f"--run_id={spec.run_id}"] if spec.run_id else []


def tensorboard_resource(spec: TrainingSpec) -> str:
    if not spec.tensorboard or spec.tensorboard.startswith("projects/"):
        return spec.tensorboard or ""
    return f"{spec.parent}/tensorboards/{spec.tensorboard}"


def _code_to_run(spec: TrainingSpec, package_uri: str, args: list[str]) -> dict:
    if spec.runs_sdist:
        return {"python_package_spec": aiplatform_v1.PythonPackageSpec(
            executor_image_uri=executor_image(spec), package_uris=[package_uri],
            python_module=TRAINER_MODULE, args=args)}
    return {"container_spec": aiplatform_v1.ContainerSpec(
        image_uri=spec.container_image, command=["python", "-m", TRAINER_MODULE], args=args)}


def _scheduling(spec: TrainingSpec) -> aiplatform_v1.Scheduling | None:
    """Spot, timeout, and restarts: the trainer resumes from its newest backup when restarted.

    A lone replica that Vertex AI restarts (a Spot preemption, a host error) simply resumes. The
    replicas of a multi-worker job must restart together: one that restarted alone would rejoin
    the others at an older step and the collectives would hang, hence
    restart_job_on_worker_restart whenever there are workers.
    """
    restart_together = spec.worker_count > 0
    if not (spec.spot or spec.timeout_hours is not None or restart_together):
        return None
    scheduling = aiplatform_v1.Scheduling()
    if spec.spot:
        scheduling.strategy = aiplatform_v1.Scheduling.Strategy.SPOT
    if spec.timeout_hours is not None:
        scheduling.timeout = duration_pb2.Duration(seconds=round(spec.timeout_hours * 3600))
    if restart_together:
        scheduling.restart_job_on_worker_restart = True
    return scheduling


def build_custom_job(spec: TrainingSpec, package_uri: str) -> aiplatform_v1.CustomJob:
    """The CustomJob for spec; package_uri is where the sdist is (or will be) in GCS."""
    check_spec(spec)
    hardware = spec.hardware
    machine = aiplatform_v1.MachineSpec(machine_type=hardware.machine_type)
    if hardware.accelerator_type:
        machine.accelerator_type = aiplatform_v1.AcceleratorType[hardware.accelerator_type]
        machine.accelerator_count = hardware.accelerator_count
    if hardware.tpu_topology:
        machine.tpu_topology = hardware.tpu_topology
    code = _code_to_run(spec, package_uri, trainer_command_args(spec))
    # Pool 0 is the chief; pool 1 the other workers. Vertex AI writes TF_CONFIG from these.
    pools = [aiplatform_v1.WorkerPoolSpec(machine_spec=machine, replica_count=1, **code)]
    if spec.worker_count:
        pools.append(aiplatform_v1.WorkerPoolSpec(
            machine_spec=machine, replica_count=spec.worker_count, **code))
    job_spec = aiplatform_v1.CustomJobSpec(
        worker_pool_specs=pools,
        base_output_directory=aiplatform_v1.GcsDestination(output_uri_prefix=spec.job_dir),
        tensorboard=tensorboard_resource(spec),
        service_account=spec.service_account or "",
        network=spec.network or "",
    )
    scheduling = _scheduling(spec)
    if scheduling is not None:
        job_spec.scheduling = scheduling
    return aiplatform_v1.CustomJob(display_name=spec.display_name, job_spec=job_spec,
                                   labels=dict(spec.labels))


def create_request(spec: TrainingSpec, package_uri: str) -> aiplatform_v1.CreateCustomJobRequest:
    return aiplatform_v1.CreateCustomJobRequest(
        parent=spec.parent, custom_job=build_custom_job(spec, package_uri))


def request_json(request: aiplatform_v1.CreateCustomJobRequest) -> str:
    """The request as the REST API receives it (proto JSON, camelCase, enum names)."""
    return aiplatform_v1.CreateCustomJobRequest.to_json(
        request, use_integers_for_enums=False, indent=2,
        always_print_fields_with_no_presence=False)


def console_url(job_name: str) -> str:
    """Console page of projects/P/locations/R/customJobs/ID (the link the aiplatform SDK logs)."""
    parts = aiplatform_v1.JobServiceClient.parse_custom_job_path(job_name)
    return (f"https://console.cloud.google.com/agent-platform/locations/{parts['location']}"
            f"/training/{parts['custom_job']}?project={parts['project']}")
