"""The main timings on both kinds of CPU people have: AVX-512 (oneDNN on by TensorFlow's own
default) and AVX2 (where TensorFlow leaves oneDNN off unless told; this project turns it on).

    python bench/cpu_kinds_bench.py [--kinds native,avx2,avx2_tf_default] [--parts step,demo]

An AVX2 CPU is approximated on an AVX-512 one by ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN's kernels
limited to AVX2), and TensorFlow's own default there by TF_ENABLE_ONEDNN_OPTS=0 (Eigen's
kernels). Parts, each in its own process, one after another in one invocation:
  step   the trainer's own training step of the demo recipe (the whole network trains from
         random weights, 48 px, batch 32): faces/s, via bench/train_step_bench.py's measure.
  demo   `bash scripts/demo.sh` (CSV -> Beam -> training -> evaluation -> export): wall time,
         the mean of its epochs after the first (which also traces the step), test accuracy.
Prints a markdown table and the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_common import (  # noqa: E402
    REPO_ROOT,
    child_env,
    make_records,
    markdown_table,
    report_result,
    run_child,
)

KINDS = {
    "native": ("this CPU, oneDNN on (TensorFlow's and our default)", {}),
    "avx2": ("AVX2 (emulated), oneDNN on (our default)", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "avx2_tf_default": ("AVX2 (emulated), oneDNN off (TensorFlow's default there)",
                        {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"}),
}
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ \(fine_tune\): \d+ steps in ([\d.]+)s")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


# configs/recipes/demo.cfg's recipe (the whole network trains from random weights).
DEMO_RECIPE = {"trainable_from": "all", "train_top_batchnorm": True, "rotation_degrees": 0.0,
               "shift_fraction": 0.0, "zoom_fraction": 0.0, "dropout": 0.0}


def measure_step(data_dir: str, job_dir: str, steps: int) -> dict:
    """The demo recipe's training step, built by the trainer's own task (batch 32)."""
    from bench.train_step_bench import measure_trainer

    return measure_trainer(data_dir, job_dir, 32, steps, cached=False, jit_compile=False,
                           **DEMO_RECIPE)


def run_demo(env_overrides: dict[str, str], work: Path) -> dict:
    env = {**child_env(), **env_overrides}
    env.pop("PYTHONPATH")  # demo.sh uses the project's virtualenv, as a user's shell does
    started = time.perf_counter()
    done = subprocess.run(["bash", "scripts/demo.sh", str(work)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=7200)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"demo.sh failed ({done.returncode}):\n{done.stderr[-3000:]}")
    epochs = [float(s) for n, s in EPOCH_LINE.findall(done.stderr) if n != "1"]
    metrics = json.loads((work / "job/eval/metrics.json").read_text())
    return {"seconds": seconds, "epoch_seconds": sum(epochs) / len(epochs),
            "accuracy": metrics["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--parts", default="step,demo")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step_child", action="store_true", help="(internal)")
    parser.add_argument("--data_dir", help="(internal)")
    parser.add_argument("--job_dir", help="(internal)")
    args = parser.parse_args()
    if args.step_child:
        report_result(measure_step(args.data_dir, args.job_dir, args.steps))
        return
    kinds, parts = args.kinds.split(","), args.parts.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="cpu_kinds_bench_") as tmp:
        data_dir = make_records(Path(tmp), 400, 48)
        for kind in kinds:
            label, overrides = KINDS[kind]
            row = [label, "-", "-", "-", "-"]
            if "step" in parts:
                result = run_child("cpu_kinds_bench.py", "--step_child", "--data_dir",
                                   str(data_dir), "--job_dir", str(Path(tmp) / f"job_{kind}"),
                                   "--steps", str(args.steps), env_overrides=overrides)
                row[1] = f"{result['images_per_s']:.1f}"
            if "demo" in parts:
                demo = run_demo(overrides, Path(tmp) / f"demo_{kind}")
                row[2:] = [f"{demo['epoch_seconds']:.0f} s", _minutes(demo["seconds"]),
                           f"{demo['accuracy']:.3f}"]
            print("  " + " | ".join(row), flush=True)
            rows.append(row)
    print(f"\nOn {cpu_name()} ({_cores()} cores):\n")
    print(markdown_table(["CPU kind", "demo step, faces/s", "demo epoch (after the 1st)",
                          "whole demo", "demo test accuracy"], rows))


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def _cores() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
