"""Training-step speed on CPU: the blog's recipe, our trainer (augmenting on the device, or
fed host-augmented batches as before), and our cached-feature path.

    python bench/train_step_bench.py [--image_size 224] [--batch_size 32] [--steps 6]

Variants, each in its own process (peak memory is the process's maximum RSS):
  blog       the whole network runs forward every step, conv5_3 and the head train; Keras
             compile + train_on_batch, SGD, BatchNorm above the cut on batch statistics (what
             Keras 2 did for the blog).
  trainer    our trainer's own train step (trainer.training.steps) in its default
             configuration: the same cut, the custom loop, Adam, BatchNorm on moving
             statistics, uint8 batches from the decoded split, flip/rotation/shift/zoom run
             inside the step on the device.
  previous   the same step fed float32 batches augmented on the host (the input path the
             trainer had before: bench/previous_pipeline.py), no augmentation in the step.
  cached     the trainer with --cache_features: the same step on the part above the cut, fed
             cached conv5_2 outputs (the one-off cost of caching is the `frozen part` row).
  *_xla      the same with --jit_compile.
  frozen     the frozen part alone in inference mode: the cost of caching one view of a face.
Random weights (the speed does not depend on them). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_common import make_records, markdown_table, report_result, run_child  # noqa: E402

VARIANTS = {
    "blog": "blog recipe: whole network forward, conv5_3 + head train (Keras fit)",
    "previous": "our trainer, host-augmented batches (before)",
    "trainer": "our trainer, default configuration (augmentation on the device)",
    "trainer_xla": "our trainer, --jit_compile",
    "cached": "our trainer, --cache_features",
    "cached_xla": "our trainer, --cache_features --jit_compile",
    "frozen": "frozen part forward (caching cost per view)",
}
WARMUP_STEPS = 2


def _timed(run_steps, steps: int, batch_size: int) -> dict:
    """Images/s of `run_steps(n)`, which must return only when n steps have run."""
    run_steps(WARMUP_STEPS)
    started = time.perf_counter()
    run_steps(steps)
    return {"images_per_s": steps * batch_size / (time.perf_counter() - started)}


def measure_blog(image_size: int, batch_size: int, steps: int) -> dict:
    import keras
    import numpy as np

    from trainer.model import build_emotion_model

    model = build_emotion_model(7, image_size=image_size, weights=None,
                                trainable_from="conv5_3", train_top_batchnorm=True)
    model.compile(optimizer=keras.optimizers.SGD(1e-4, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=False)  # Keras 2 had no XLA
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, image_size, image_size, 1)).astype("float32")
    labels = rng.integers(0, 7, (batch_size,))

    def run_steps(n):
        for _ in range(n):
            model.train_on_batch(images, labels)

    return _timed(run_steps, steps, batch_size)


def measure_frozen(image_size: int, batch_size: int, steps: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from trainer.model import build_emotion_model, split_at_cut

    model = build_emotion_model(7, image_size=image_size, weights=None)
    frozen, _ = split_at_cut(model, "conv5_3")
    images = np.random.default_rng(0).integers(
        0, 256, (batch_size, image_size, image_size, 1)).astype("float32")
    forward = tf.function(lambda x: frozen(x, training=False))

    def run_steps(n):
        for _ in range(n):
            forward(images).numpy()

    return _timed(run_steps, steps, batch_size)


def measure_trainer(data_dir: str, job_dir: str, batch_size: int, steps: int, cached: bool,
                    jit_compile: bool, previous: bool = False, **recipe) -> dict:
    """The trainer's fine-tuning step, built by its own task and step functions; `recipe`:
    TrainConfig fields other than the defaults (e.g. configs/recipes/demo.cfg's)."""
    import dataclasses

    import tensorflow as tf

    from bench.previous_pipeline import previous_train_dataset
    from trainer.config import TrainConfig
    from trainer.data.input_pipeline import Pipeline
    from trainer.data.manifest import load_manifest
    from trainer.task import EmotionTask
    from trainer.training.output_dirs import resolve_output_dirs
    from trainer.training.steps import TrainMetrics, train_function
    from trainer.training.strategy import create_strategy

    config = TrainConfig.of(data_dir=data_dir, job_dir=job_dir, weights=None, head_epochs=0,
                         epochs=1, batch_size=batch_size, jit_compile=jit_compile,
                         **(_CACHED if cached else {}), **recipe)
    strategy = create_strategy("default")
    manifest = load_manifest(data_dir)
    plan = EmotionTask(config, manifest, strategy).plan(resolve_output_dirs(job_dir, {}))
    phase = plan.phases[-1]
    plan.enter_phase(phase)
    optimizer = plan.make_optimizer(phase)
    optimizer.build(plan.step.model.trainable_variables)
    step, metrics = plan.step, TrainMetrics()
    if previous:
        step = dataclasses.replace(step, prepare=None)
        dataset = previous_train_dataset(manifest.split_files("train", data_dir),
                                         manifest.image_size, batch_size).map(
            lambda x, y: (x, y, tf.one_hot(y, manifest.num_classes)))
    else:
        dataset = plan.train_source.train_dataset(Pipeline(), batch_size, 0, 0, 2048)
    steps_per_call = config.loop.steps_per_execution
    train_steps = train_function(strategy, step, optimizer, metrics, batch_size, steps_per_call)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))

    def run_steps(n):
        for first in range(0, n, steps_per_call):  # calls of steps_per_call steps, as the loop
            train_steps(iterator, tf.constant(first, tf.int64),
                        tf.constant(min(steps_per_call, n - first)))
        float(metrics.loss.result())

    return _timed(run_steps, steps, batch_size)


# --cache_features keeps flips only (see trainer/feature_cache.py).
_CACHED = {"cache_features": True, "rotation_degrees": 0.0, "shift_fraction": 0.0,
                           "zoom_fraction": 0.0, "random_erasing": 0.0}


def measure(variant: str, args) -> dict:
    if variant == "blog":
        return measure_blog(args.image_size, args.batch_size, args.steps)
    if variant == "frozen":
        return measure_frozen(args.image_size, args.batch_size, args.steps)
    return measure_trainer(args.data_dir, args.job_dir, args.batch_size,
                           args.steps * (4 if variant.startswith("cached") else 1),
                           cached=variant.startswith("cached"),
                           jit_compile=variant.endswith("_xla"), previous=variant == "previous")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="measured steps (x4 if cached)")
    parser.add_argument("--rows", type=int, default=200, help="synthetic rows for the records")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="(internal) measure one")
    parser.add_argument("--data_dir", help="(internal)")
    parser.add_argument("--job_dir", help="(internal)")
    args = parser.parse_args()
    if args.variant:
        report_result(measure(args.variant, args))
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="train_step_bench_") as tmp:
        data_dir = make_records(Path(tmp), args.rows, args.image_size)
        for variant in args.variants.split(","):
            results[variant] = run_child(
                "train_step_bench.py", "--variant", variant, "--data_dir", str(data_dir),
                "--job_dir", str(Path(tmp) / f"job_{variant}"), "--image_size",
                str(args.image_size), "--batch_size", str(args.batch_size),
                "--steps", str(args.steps))
            print(f"  {VARIANTS[variant]}: {results[variant]['images_per_s']:.1f} images/s",
                  flush=True)
    base = results.get("trainer", {}).get("images_per_s")
    rows = [[VARIANTS[v], f"{r['images_per_s']:.1f}",
             f"{r['images_per_s'] / base:.2f}x" if base else "-", f"{r['peak_mb']:,.0f}"]
            for v, r in results.items()]
    print(f"\nOne training step on CPU, {args.image_size}px, batch {args.batch_size}, "
          "random weights:\n")
    print(markdown_table(["variant", "images/s", "vs our trainer", "peak RSS MB"], rows))


if __name__ == "__main__":
    main()
