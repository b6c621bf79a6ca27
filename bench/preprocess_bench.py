"""Preprocessing speed: the Beam job against the simplest single-process loop, in one run.

    python bench/preprocess_bench.py [--rows 35887] [--scales 1,2,4 --scale_rows 4000]

The baseline is what the original blog did: read the CSV row by row, parse pixels with
split(), resize to 224x224, repeat the grey channel three times, and write raw bytes to one
TFRecord per split. The Beam job runs in-process at 224 px and at 48 px (the demo's size: no
upsampling, so it shows what the 224 px payload costs), and with two worker processes. Every
variant runs in its own process so peak memory (max RSS of the process and its children) is its
own. Prints a markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Runs in a child process: the blog-style loop.
_BASELINE = r"""
import csv, sys, cv2, numpy as np, tensorflow as tf
csv_path, out_dir, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
splits = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
writers = {s: tf.io.TFRecordWriter(f"{out_dir}/{s}.tfrecord") for s in splits.values()}
with open(csv_path) as f:
    for row in csv.DictReader(f):
        face = np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48)
        rgb = np.stack([cv2.resize(face, (size, size))] * 3, axis=-1)
        example = tf.train.Example(features=tf.train.Features(feature={
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[rgb.tobytes()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row["emotion"])])),
        }))
        writers[splits[row["Usage"]]].write(example.SerializeToString())
for w in writers.values():
    w.close()
"""

# Wraps a command so that it reports its own peak memory and CPU time, children included. CPU
# seconds move less than wall seconds when other jobs share the machine.
_MEASURE = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "peak_mb": max(usage.ru_maxrss, 0) / 1024}))
"""


def measure(command: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, *command], check=True,
                         capture_output=True, text=True, cwd=REPO_ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.tfrecord"))


def beam_command(csv_path: Path, out: Path, workers: int, image_size: int = 224) -> list[str]:
    command = [sys.executable, "-m", "beam_preprocess", "--input", str(csv_path),
               "--output_dir", str(out), "--runner", "DirectRunner",
               "--image_size", str(image_size)]
    if workers > 1:
        command += ["--direct_num_workers", str(workers),
                    "--direct_running_mode", "multi_processing"]
    return command


def run_variants(csv_path: Path, rows: int, work: Path) -> list[dict]:
    results = []
    variants = [
        ("blog loop (1 process, 3-channel raw)",
         [sys.executable, "-c", _BASELINE, str(csv_path), str(work / "baseline"), "224"],
         work / "baseline"),
        ("Beam DirectRunner, in-process", beam_command(csv_path, work / "beam1", 1),
         work / "beam1"),
        ("Beam DirectRunner, in-process, 48 px", beam_command(csv_path, work / "beam48", 1, 48),
         work / "beam48"),
        ("Beam DirectRunner, multi_processing x2", beam_command(csv_path, work / "beam2", 2),
         work / "beam2"),
    ]
    for name, command, out in variants:
        out.mkdir(exist_ok=True)
        m = measure(command)
        bytes_total = dir_bytes(out)
        results.append({"variant": name, "rows": rows, **m, "rows_per_s": rows / m["seconds"],
                        "bytes_per_record": bytes_total / rows})
        print(f"  {name}: {m['seconds']:.1f} s ({m['cpu_seconds']:.1f} CPU s), "
              f"{rows / m['seconds']:.0f} rows/s, {bytes_total / rows:,.0f} B/record, "
              f"peak {m['peak_mb']:.0f} MB", flush=True)
        for f in out.glob("*.tfrecord"):
            f.unlink()
    return results


def write_synthetic(rows: int, path: Path) -> None:
    subprocess.run([sys.executable, "-m", "beam_preprocess.synthetic", "--rows", str(rows),
                    "--output", str(path)], check=True, cwd=REPO_ROOT)


def table(results: list[dict]) -> str:
    base = {r["rows"]: r["seconds"] for r in results if r["variant"].startswith("blog")}
    lines = ["| variant | rows | seconds | CPU seconds | rows/s | speed-up vs loop | bytes/record "
             "| peak MB |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['variant']} | {r['rows']:,} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
            f"{r['rows_per_s']:.0f} | {base[r['rows']] / r['seconds']:.2f}x | "
            f"{r['bytes_per_record']:,.0f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=35887, help="full fer2013 size by default")
    parser.add_argument("--scales", default="", help="e.g. 1,2,4: also run at these multiples")
    parser.add_argument("--scale_rows", type=int, default=4000, help="base size for --scales")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = []
    with tempfile.TemporaryDirectory(prefix="preprocess_bench_") as tmp:
        work = Path(tmp)
        sizes = [args.rows] + [args.scale_rows * int(s) for s in filter(None,
                                                                        args.scales.split(","))]
        for rows in sizes:
            csv_path = work / f"fer2013_{rows}.csv"
            print(f"{rows:,} rows:", flush=True)
            write_synthetic(rows, csv_path)
            results += run_variants(csv_path, rows, work)
            csv_path.unlink()
    print()
    print(table(results))


if __name__ == "__main__":
    main()
