"""Epoch time of the real trainer (`python -m trainer`): default vs --cache_features, and how it
grows with the data.

    python bench/epoch_bench.py                       # default vs cached, one size
    python bench/epoch_bench.py --scales 1,2,4 --rows 400       # and how it scales

Each run trains the fine-tuning phase for two epochs (random weights, 224 px, batch 32) on
synthetic fer2013 rows preprocessed by the Beam job, and reads the trainer's own log: the
time of each epoch (its steps, the validation pass and the checkpoint saves) and, with
--cache_features, the one-off time of computing the cache. Epoch 2 is the steady state.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_common import REPO_ROOT, child_env, make_records, markdown_table  # noqa: E402

PATHS = {
    "default": ("our trainer, default configuration", []),
    "cached": ("our trainer, --cache_features", [
        "--cache_features", "--rotation_degrees=0", "--shift_fraction=0", "--zoom_fraction=0"]),
}
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ \(\w+\): (\d+) steps in ([\d.]+)s")
CACHE_LINE = re.compile(r"cached (\w+) features of (\d+) faces in ([\d.]+)s")
# Runs the trainer and reports its peak memory (RUSAGE_CHILDREN) after the log.
_MEASURE = r"""
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr)
peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"returncode": done.returncode, "peak_mb": peak_mb}))
"""


def run_trainer(data_dir: Path, job_dir: Path, batch_size: int, extra: list[str]) -> dict:
    command = [sys.executable, "-c", _MEASURE, sys.executable, "-m", "trainer",
               f"--data_dir={data_dir}", f"--job_dir={job_dir}", "--weights=none",
               "--head_epochs=0", "--epochs=2", f"--batch_size={batch_size}",
               "--backup_every_steps=1000", *extra]
    done = subprocess.run(command, cwd=REPO_ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=3600)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    if measured["returncode"] != 0:
        raise RuntimeError(f"trainer failed:\n{done.stderr[-3000:]}")
    epochs = {int(e): float(s) for e, _, s in EPOCH_LINE.findall(done.stderr)}
    cache = sum(float(s) for _, _, s in CACHE_LINE.findall(done.stderr))
    return {"epoch_1": epochs[1], "epoch_2": epochs[2], "cache_s": cache,
            "peak_mb": measured["peak_mb"]}


def train_records(data_dir: Path) -> int:
    manifest = json.loads((data_dir / "manifest.json").read_text())
    return manifest["splits"]["train"]["records"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="synthetic rows at scale 1")
    parser.add_argument("--scales", default="1", help="multiples of --rows, e.g. 1,2,4")
    parser.add_argument("--paths", default="default,cached", help=f"of {', '.join(PATHS)}")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    paths = args.paths.split(",")
    results = []
    with tempfile.TemporaryDirectory(prefix="epoch_bench_") as tmp:
        for scale in map(int, args.scales.split(",")):
            data_dir = make_records(Path(tmp), args.rows * scale, args.image_size)
            faces = train_records(data_dir)
            for path in paths:
                name, extra = PATHS[path]
                job_dir = Path(tmp) / f"job_{path}_{scale}"
                r = run_trainer(data_dir, job_dir, args.batch_size, extra)
                results.append({"path": path, "scale": scale, "faces": faces, **r})
                print(f"  {name}, {faces} training faces: epoch 2 {r['epoch_2']:.1f}s",
                      flush=True)
    print(f"\nEpoch time, {args.image_size}px, batch {args.batch_size}, random weights "
          "(an epoch = one pass over the training faces + validation + checkpoints):\n")
    print(markdown_table(
        ["trainer", "training faces", "caching (once)", "epoch 1", "epoch 2", "faces/s (2)",
         "peak RSS MB"],
        [[PATHS[r["path"]][0], f"{r['faces']:,}", f"{r['cache_s']:.0f}s" if r["cache_s"]
          else "-", f"{r['epoch_1']:.1f}s", f"{r['epoch_2']:.1f}s",
          f"{r['faces'] / r['epoch_2']:.1f}", f"{r['peak_mb']:,.0f}"] for r in results]))
    if "default" in paths and "cached" in paths:
        for r in (r for r in results if r["path"] == "cached"):
            default = _by(results, "default", r["scale"])
            print(f"\nEpoch 2 at {r['faces']:,} faces: cached is "
                  f"{default['epoch_2'] / r['epoch_2']:.1f}x faster than default.")
    scales = sorted({r["scale"] for r in results})
    if len(scales) > 1:
        print("\nScaling: epoch 2 time = fixed + per-face cost x faces, fitted over the scales "
              "(linear when the fit is close and the marginal cost stays put):\n")
        print(markdown_table(
            ["trainer", *[f"epoch 2 at {s}x" for s in scales], "fixed per epoch",
             "per 1,000 faces", "worst fit error"],
            [_scaling_row(p, [_by(results, p, s) for s in scales]) for p in paths]))


def _scaling_row(path: str, runs: list[dict]) -> list[str]:
    faces = np.array([r["faces"] for r in runs], dtype=float)
    seconds = np.array([r["epoch_2"] for r in runs])
    per_face, fixed = np.polyfit(faces, seconds, 1)
    error = np.max(np.abs(fixed + per_face * faces - seconds) / seconds)
    return [PATHS[path][0], *[f"{t:.1f}s" for t in seconds], f"{fixed:.1f}s",
            f"{per_face * 1000:.1f}s", f"{error:.0%}"]


def _by(results: list[dict], path: str, scale: int) -> dict:
    return next(r for r in results if r["path"] == path and r["scale"] == scale)


if __name__ == "__main__":
    main()
