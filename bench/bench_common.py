"""What the trainer benchmarks share: test data, one process per measurement, markdown tables.

Every measurement runs in a fresh child process (`python bench/X.py --variant NAME ...`), so
its peak memory is its own and no variant warms caches for the next; the parent runs them one
after another in one invocation, so ratios compare like with like on a shared, noisy machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from beam_preprocess.cpu_kernels import use_onednn_unless_set

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH_RESULT "


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    use_onednn_unless_set(env)  # as the project's packages do; the blog loop imports TF bare
    return {k: v for k, v in env.items() if k != "TF_CONFIG" and not k.startswith("AIP_")}


def make_records(work: Path, rows: int, image_size: int, train_shards: int = 16) -> Path:
    """Synthetic fer2013 rows preprocessed by the Beam job: a trainer data dir."""
    csv_path, data_dir = work / f"fer2013_{rows}.csv", work / f"records_{rows}_{image_size}"
    if (data_dir / "manifest.json").exists():
        return data_dir
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "beam_preprocess.synthetic", "--rows", str(rows),
                    "--output", str(csv_path)], check=True, cwd=REPO_ROOT, env=child_env())
    subprocess.run([sys.executable, "-m", "beam_preprocess", "--input", str(csv_path),
                    "--output_dir", str(data_dir), "--runner", "DirectRunner",
                    "--image_size", str(image_size), "--num_shards", str(train_shards)],
                   check=True, cwd=REPO_ROOT, env=child_env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    csv_path.unlink()
    print(f"  {rows:,} rows preprocessed at {image_size}px in "
          f"{time.perf_counter() - started:.0f}s", flush=True)
    return data_dir


def run_child(script: str, *args: str, timeout: float = 1800,
              env_overrides: dict[str, str] | None = None) -> dict:
    """Runs `python bench/SCRIPT ARGS` and returns the JSON result it printed."""
    command = [sys.executable, str(REPO_ROOT / "bench" / script), *args]
    done = subprocess.run(command, cwd=REPO_ROOT, env={**child_env(), **(env_overrides or {})},
                          capture_output=True, text=True, timeout=timeout)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line.removeprefix(RESULT_PREFIX))
    raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                       f"{done.stderr[-3000:]}")


def report_result(result: dict) -> None:
    """Called in the child: prints the result, with this process's peak memory."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT_PREFIX + json.dumps({**result, "peak_mb": peak_mb}), flush=True)


def cpu_seconds() -> float:
    """CPU time of this process, all threads."""
    times = os.times()
    return times.user + times.system


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
