"""Host CPU per training image: the previous input pipeline against the device data path.

    python bench/input_bench.py [--rows 2000] [--sizes 224,48] [--batch_size 32]

Variants, each in its own process, for records stored at each of --sizes:
  previous   PNG decode + flip/rotation/shift/zoom as float32 on the host, every epoch
             (bench/previous_pipeline.py: what the trainer did before).
  streamed   the trainer's RecordFiles: PNG decode every epoch, uint8 batches, augmentation
             left to the device.
  decoded    the trainer's DecodedSplit: the split decoded once into memory, then every epoch
             a permutation gathered into uint8 batches (its one-off decode is reported apart).
"CPU-seconds per image" is the CPU time the process used per training image delivered; "host
cores per 3,000 img/s" is what feeding an accelerator at that rate (one H100 on this
fine-tune) would take. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_common import (  # noqa: E402
    cpu_seconds,
    make_records,
    markdown_table,
    report_result,
    run_child,
)

VARIANTS = {
    "previous": "previous: host decode + host augmentation",
    "streamed": "streamed records, uint8 to the device",
    "decoded": "decoded once, in memory, uint8 to the device",
}
ACCELERATOR_RATE = 3000


def _dataset(variant: str, data_dir: str, batch_size: int):
    from bench.previous_pipeline import previous_train_dataset
    from trainer.data.input_pipeline import Pipeline, RecordFiles, decode_into_memory
    from trainer.data.manifest import load_manifest

    manifest = load_manifest(data_dir)
    source = RecordFiles.of(manifest, "train", data_dir)
    if variant == "previous":
        return previous_train_dataset(source.files, manifest.image_size, batch_size), {}
    if variant == "streamed":
        return source.train_dataset(Pipeline(), batch_size, 0, 0, 2048), {}
    wall, cpu = time.perf_counter(), cpu_seconds()
    decoded = decode_into_memory(source, Pipeline())
    once = {"decode_cpu_s_per_image": (cpu_seconds() - cpu) / source.records,
            "decode_wall_s": time.perf_counter() - wall}
    return decoded.train_dataset(Pipeline(), batch_size, 0, 0), once


def measure_variant(variant: str, data_dir: str, batch_size: int, batches: int) -> dict:
    dataset, extra = _dataset(variant, data_dir, batch_size)
    iterator = iter(dataset)
    for _ in range(5):  # warm-up: tracing, autotuning, filling the shuffle buffer
        next(iterator)
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    images = batches * batch_size
    return {"cpu_s_per_image": cpu / images, "images_per_s": images / wall, **extra}


def _row(size: int, variant: str, result: dict, previous: dict) -> list[str]:
    per_image = result["cpu_s_per_image"]
    once = result.get("decode_cpu_s_per_image")
    return [f"{size} px", VARIANTS[variant], f"{per_image * 1e3:.3f}",
            f"{previous['cpu_s_per_image'] / per_image:.1f}x",
            f"{per_image * ACCELERATOR_RATE:.2f}", f"{result['images_per_s']:,.0f}",
            f"{once * 1e3:.2f}" if once else "-", f"{result['peak_mb']:,.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="synthetic CSV rows")
    parser.add_argument("--sizes", default="224,48", help="record sides to measure")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=60, help="measured batches per variant")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="(internal) measure one")
    parser.add_argument("--data_dir", help="(internal) records to read")
    args = parser.parse_args()
    if args.variant:
        report_result(measure_variant(args.variant, args.data_dir, args.batch_size,
                                      args.batches))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="input_bench_") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            data_dir = make_records(Path(tmp), args.rows, size)
            results = {}
            for variant in VARIANTS:
                results[variant] = run_child(
                    "input_bench.py", "--variant", variant, "--data_dir", str(data_dir),
                    "--batch_size", str(args.batch_size), "--batches", str(args.batches))
                print(f"  {size}px {VARIANTS[variant]}: "
                      f"{results[variant]['cpu_s_per_image'] * 1e3:.3f} ms CPU per image",
                      flush=True)
            rows += [_row(size, v, r, results["previous"]) for v, r in results.items()]
    print(f"\nHost CPU per training image, batch {args.batch_size}:\n")
    print(markdown_table(["records", "input path", "CPU ms per image", "less CPU than previous",
                          f"host cores per {ACCELERATOR_RATE:,} img/s", "images/s here",
                          "one-off decode, CPU ms per image", "peak MB"], rows))


if __name__ == "__main__":
    main()
