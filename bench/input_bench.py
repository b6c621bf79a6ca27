"""Input pipeline speed: faces/s the trainer's tf.data pipeline delivers from TFRecords.

    python bench/input_bench.py [--rows 2000] [--image_size 224] [--batch_size 32]

Measures trainer.data.input_pipeline.train_dataset (parse, PNG decode, augment, batch; interleaved
reads, parallel maps, augmentation vectorised over the batch, prefetch) against the simplest
pipeline doing the same work (one TFRecordDataset, sequential per-face maps, no prefetch), with
and without augmentation, each in its own process. "per CPU-second" divides by the CPU time the
process used, so it shows the work per face; the wall-clock rate shows what the parallelism
adds. Prints a markdown table.
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
    "ours_augment": ("trainer pipeline, augmented", True, True),
    "ours_plain": ("trainer pipeline, no augmentation", True, False),
    "simple_augment": ("simplest pipeline, augmented", False, True),
    "simple_plain": ("simplest pipeline, no augmentation", False, False),
}
SHUFFLE_BUFFER = 1024


def simplest_dataset(files, image_size, num_classes, batch_size, augmentation):
    """The textbook pipeline: one TFRecordDataset, parse, decode and augment face by face in
    sequential maps, then batch; no interleave, no parallel map, no prefetch.

    tf.data would parallelise the maps and add a prefetch by itself (its default
    map_parallelization and inject_prefetch rewrites): both are turned off here. The
    augmentation is the trainer's own (augment_batch on a batch of one), so both pipelines do
    the same work per face.
    """
    import tensorflow as tf

    from trainer.data.input_pipeline import augment_batch, record_decoder

    dataset = (tf.data.TFRecordDataset(files).repeat().shuffle(SHUFFLE_BUFFER)
               .map(record_decoder(image_size, num_classes)))
    if augmentation is None:
        dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y))
    else:
        dataset = dataset.map(lambda x, y: (augment_batch(x[None], augmentation)[0], y))
    options = tf.data.Options()
    options.experimental_optimization.map_parallelization = False
    options.experimental_optimization.inject_prefetch = False
    return dataset.batch(batch_size, drop_remainder=True).with_options(options)


def measure_variant(variant: str, data_dir: str, batch_size: int, batches: int) -> dict:
    from trainer.data.input_pipeline import Augmentation, load_manifest, train_dataset

    _, ours, augmented = VARIANTS[variant]
    manifest = load_manifest(data_dir)
    files = manifest.split_files("train", data_dir)
    augmentation = Augmentation() if augmented else None
    if ours:
        dataset = train_dataset(files, manifest.image_size, manifest.num_classes, batch_size,
                                None, augmentation, SHUFFLE_BUFFER, seed=0)
    else:
        dataset = simplest_dataset(files, manifest.image_size, manifest.num_classes,
                                   batch_size, augmentation)
    iterator = iter(dataset)
    for _ in range(5):  # warm-up: tracing, autotuning, filling the shuffle buffer
        next(iterator)
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    faces = batches * batch_size
    return {"faces_per_s": faces / wall, "faces_per_cpu_s": faces / cpu,
            "cores_busy": cpu / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="synthetic CSV rows")
    parser.add_argument("--image_size", type=int, default=224)
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
        data_dir = make_records(Path(tmp), args.rows, args.image_size)
        results = {}
        for variant, (name, _, _) in VARIANTS.items():
            results[variant] = run_child("input_bench.py", "--variant", variant, "--data_dir",
                                         str(data_dir), "--batch_size", str(args.batch_size),
                                         "--batches", str(args.batches))
            print(f"  {name}: {results[variant]['faces_per_s']:.0f} faces/s", flush=True)
    for variant, (name, _, augmented) in VARIANTS.items():
        r = results[variant]
        simple = results["simple_augment" if augmented else "simple_plain"]
        rows.append([name, f"{r['faces_per_s']:.0f}", f"{r['faces_per_cpu_s']:.0f}",
                     f"{r['cores_busy']:.2f}", f"{r['faces_per_s'] / simple['faces_per_s']:.2f}x",
                     f"{r['peak_mb']:.0f}"])
    print(f"\nInput pipeline, {args.image_size}px PNG records, batch {args.batch_size}:\n")
    print(markdown_table(["pipeline", "faces/s", "faces per CPU-second", "cores busy",
                          "vs simplest", "peak MB"], rows))


if __name__ == "__main__":
    main()
