"""`launch preprocess`'s pipeline, run here the way Dataflow would run it: the exact argv the
launcher builds (its --dry_run "argv"), with the DirectRunner in multi-processing mode (several
worker processes, each with its own Python, as Dataflow's workers are) in place of
DataflowRunner, every other option unchanged.

Implemented: the launcher's options reach Beam's option parser as on Dataflow (an option Beam
refuses fails here too); the work runs in separate worker processes, so anything the workers
need must be picklable and importable there; gs:// input and output go through Beam's GCS file
system (the tests point it at the GCS emulator); the driver commits after the pipeline, as it
does after a Dataflow job.
Not implemented: Dataflow's worker VMs and their container image or setup.py install, work item
retries (each bundle runs once here; tests/beam_preprocess covers a shard written twice and a
commit run again), autoscaling, Dataflow's service-side job graph checks (`launch preprocess`'s
own test builds the Dataflow job graph offline).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

LOCAL_WORKERS = 2


def direct_runner_argv(launcher_argv: list[str], workers: int = LOCAL_WORKERS) -> list[str]:
    """The launcher's beam_preprocess argv (argv[0] included) with DataflowRunner replaced by
    the multi-processing DirectRunner."""
    argv = [arg for arg in launcher_argv if not arg.startswith("--runner")]
    return [*argv, "--runner=DirectRunner", "--direct_running_mode=multi_processing",
            f"--direct_num_workers={workers}"]


def run(launcher_argv: list[str], env: Mapping[str, str], cwd: Path | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """Runs `python -m beam_preprocess` with direct_runner_argv(launcher_argv)."""
    argv = direct_runner_argv(launcher_argv)
    return subprocess.run([sys.executable, "-m", "beam_preprocess", *argv[1:]], cwd=cwd,
                          env=dict(env), capture_output=True, text=True, timeout=timeout)
