"""A Vertex AI CustomJob run on this machine, as Vertex AI runs it.

    python -m launch train ... --dry_run > job.json
    python -m launch.local_cloud.custom_job job.json --bucket_root /tmp/gcs [--log_dir DIR]

Implemented, after Google's documentation:
- Each worker pool's replicas are processes running the pool's container command and args
  (`python` is this interpreter), or `python -m <python_module> <args>` for a Python package
  spec (installing package_uris is not emulated: tests/launch/test_submit.py installs the
  uploaded sdist).
- Environment (cloud.google.com/vertex-ai/docs/training/code-requirements#environment-variables):
  with a base output directory, AIP_MODEL_DIR=<base>/model/, AIP_CHECKPOINT_DIR=
  <base>/checkpoints/ and AIP_TENSORBOARD_LOG_DIR=<base>/logs/; the container spec's env.
- Several replicas (cloud.google.com/vertex-ai/docs/training/distributed-training): CLUSTER_SPEC
  with workerpool0..3, and TF_CONFIG with workerpool0 as "chief", workerpool1 as "worker".
- No service account credentials in the replicas' environment (the job's own account is the
  metadata server's business; none here).
- Spot preemption (cloud.google.com/vertex-ai/docs/training/use-spot-vms and
  cloud.google.com/compute/docs/instances/spot#preemption-process): SIGTERM, a grace period
  (30 s on Compute Engine), SIGKILL, then the job's replicas restart with IDENTICAL commands.
- A worker restart (CustomJobSpec.scheduling.restart_job_on_worker_restart,
  cloud.google.com/vertex-ai/docs/reference/rest/v1/CustomJobSpec#scheduling): true restarts
  every replica, false only the one that went down.
- Scheduling.timeout (default 7 days): the replicas are stopped and the job fails.
- A replica exiting non-zero fails the job (the others are stopped); all exiting 0 succeeds it.
Not implemented: machine types and accelerators (every replica is a local CPU process), the
sdist installation, reserved IPs, VPC networks, the TensorBoard upload, Vertex's own retries of
system errors, parameter servers and evaluators (pools 2 and 3 run as plain workers).
gs:// paths in args and environment are local folders (launch.local_cloud.buckets).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from google.cloud import aiplatform_v1

from launch.local_cloud.buckets import LocalBuckets

SPOT_GRACE_SECONDS = 30.0
DEFAULT_TIMEOUT_SECONDS = 7 * 24 * 3600
TF_CONFIG_TASK_TYPES = ("chief", "worker", "ps", "evaluator")  # workerpool0..3
CREDENTIAL_VARIABLES = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG")
SUCCEEDED, FAILED = "JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED"


class JobEndedError(RuntimeError):
    """The job ended while the caller waited for something else to happen."""


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    state: str
    error: str = ""
    restarts: int = 0


@dataclasses.dataclass
class Replica:
    name: str  # workerpoolN-I
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    commands_run: list[list[str]] = dataclasses.field(default_factory=list)

    def start(self, cwd: Path | None) -> None:
        with open(self.log_path, "a") as log:
            log.write(f"=== start {len(self.commands_run) + 1}: {' '.join(self.command)}\n")
            log.flush()
            self.process = subprocess.Popen(self.command, cwd=cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        self.commands_run.append(list(self.command))

    def exit_code(self) -> int | None:
        return self.process.poll()

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM, the grace period, then SIGKILL: what a VM going down does to it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(pool: aiplatform_v1.WorkerPoolSpec, buckets: LocalBuckets) -> list[str]:
    if pool.container_spec.image_uri:
        command = list(pool.container_spec.command) or ["python"]
        command = [sys.executable if part == "python" else part for part in command]
        args = pool.container_spec.args
    else:
        command = [sys.executable, "-m", pool.python_package_spec.python_module]
        args = pool.python_package_spec.args
    return command + [buckets.localize(arg) for arg in args]


def _output_env(spec: aiplatform_v1.CustomJobSpec, buckets: LocalBuckets) -> dict[str, str]:
    base = spec.base_output_directory.output_uri_prefix.rstrip("/")
    if not base:
        return {}
    return {variable: buckets.localize(f"{base}/{folder}/") for variable, folder in (
        ("AIP_MODEL_DIR", "model"), ("AIP_CHECKPOINT_DIR", "checkpoints"),
        ("AIP_TENSORBOARD_LOG_DIR", "logs"))}


def _cluster_env(addresses: list[list[str]], pool: int, index: int) -> dict[str, str]:
    """CLUSTER_SPEC and TF_CONFIG of replica `index` of pool `pool`."""
    cluster_spec = {"cluster": {f"workerpool{p}": a for p, a in enumerate(addresses) if a},
                    "environment": "cloud",
                    "task": {"type": f"workerpool{pool}", "index": index}}
    tf_config = {"cluster": {TF_CONFIG_TASK_TYPES[p]: a for p, a in enumerate(addresses) if a},
                 "environment": "cloud",
                 "task": {"type": TF_CONFIG_TASK_TYPES[pool], "index": index}}
    return {"CLUSTER_SPEC": json.dumps(cluster_spec), "TF_CONFIG": json.dumps(tf_config)}


class LocalCustomJob:
    """The replicas of one CustomJob as local processes; start(), then wait() for its end."""

    def __init__(self, job: aiplatform_v1.CustomJob, buckets: LocalBuckets, log_dir: Path,
                 base_env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 grace_seconds: float = SPOT_GRACE_SECONDS):
        self.job, self.cwd, self.grace_seconds = job, cwd, grace_seconds
        spec = job.job_spec
        self.restart_together = spec.scheduling.restart_job_on_worker_restart
        timeout = spec.scheduling.timeout
        self.timeout_seconds = (timeout.total_seconds() if timeout else DEFAULT_TIMEOUT_SECONDS)
        self.restarts = 0
        env = {k: v for k, v in (base_env if base_env is not None else os.environ).items()
               if k not in CREDENTIAL_VARIABLES and not k.startswith("AIP_")
               and k not in ("TF_CONFIG", "CLUSTER_SPEC")}
        env.update(_output_env(spec, buckets))
        pools = list(spec.worker_pool_specs)
        addresses = [[f"127.0.0.1:{free_port()}" for _ in range(pool.replica_count)]
                     for pool in pools]
        several = sum(len(a) for a in addresses) > 1
        log_dir.mkdir(parents=True, exist_ok=True)
        self.replicas: list[Replica] = []
        for p, pool in enumerate(pools):
            pool_env = {**env, **{e.name: buckets.localize(e.value)
                                  for e in pool.container_spec.env}}
            for i in range(pool.replica_count):
                name = f"workerpool{p}-{i}"
                self.replicas.append(Replica(
                    name, _command(pool, buckets),
                    {**pool_env, **(_cluster_env(addresses, p, i) if several else {})},
                    log_dir / f"{name}.log"))

    def start(self) -> None:
        self.started = time.monotonic()
        for replica in self.replicas:
            replica.start(self.cwd)

    def replica(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def preempt(self) -> None:
        """A Spot preemption: every replica's VM goes down (SIGTERM, grace, SIGKILL); the job
        restarts with the same commands."""
        for replica in self.replicas:
            replica.process.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            replica.stop(self.grace_seconds)
        self._restart(self.replicas)

    def kill_replica(self, name: str) -> None:
        """One replica's VM fails (SIGKILL). Vertex AI restarts that replica, or the whole job
        with restart_job_on_worker_restart."""
        replica = self.replica(name)
        replica.process.kill()
        replica.process.wait()
        if self.restart_together:
            for other in self.replicas:
                other.stop(self.grace_seconds)
            self._restart(self.replicas)
        else:
            self._restart([replica])

    def _restart(self, replicas: list[Replica]) -> None:
        self.restarts += 1
        for replica in replicas:
            replica.start(self.cwd)

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> None:
        """Returns once condition() holds; JobEndedError if the job ends first."""
        deadline = time.monotonic() + timeout
        while not condition():
            outcome = self._outcome()
            if outcome is not None:
                raise JobEndedError(f"the job ended ({outcome.state} {outcome.error}) first")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not within {timeout:.0f}s")
            time.sleep(0.05)

    def wait(self) -> JobOutcome:
        """Runs the job to its end (its own timeout included) and says how it ended."""
        while (outcome := self._outcome()) is None:
            time.sleep(0.1)
        return outcome

    def _outcome(self) -> JobOutcome | None:
        codes = {r.name: r.exit_code() for r in self.replicas}
        failed = {name: code for name, code in codes.items() if code not in (None, 0)}
        if failed:
            self.stop()
            name, code = next(iter(failed.items()))
            return JobOutcome(FAILED, f"The replica {name} exited with a non-zero status of "
                              f"{code}.", self.restarts)
        if all(code == 0 for code in codes.values()):
            return JobOutcome(SUCCEEDED, "", self.restarts)
        if time.monotonic() - self.started > self.timeout_seconds:
            self.stop()
            return JobOutcome(FAILED, f"The job ran past its timeout of "
                              f"{self.timeout_seconds:g} s and was stopped.", self.restarts)
        return None

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop(self.grace_seconds)


def read_request(path: Path) -> aiplatform_v1.CustomJob:
    """The CustomJob of a CreateCustomJobRequest as `launch train --dry_run` prints it."""
    return aiplatform_v1.CreateCustomJobRequest.from_json(path.read_text()).custom_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("request", type=Path, help="`launch train --dry_run` output")
    parser.add_argument("--bucket_root", type=Path, required=True,
                        help="local folder holding the gs:// buckets")
    parser.add_argument("--log_dir", type=Path, default=Path("local_custom_job_logs"))
    args = parser.parse_args(argv)
    job = LocalCustomJob(read_request(args.request), LocalBuckets(args.bucket_root),
                         args.log_dir)
    job.start()
    outcome = job.wait()
    print(f"{outcome.state} {outcome.error} (logs: {args.log_dir})".strip())
    return 0 if outcome.state == SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
