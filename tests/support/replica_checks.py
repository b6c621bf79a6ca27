"""Checks that need two replicas, run in a fresh process (the CPU must be split into two
logical devices before TensorFlow starts): `python -m tests.support.replica_checks NAME`.

Each check prints one JSON line with what it measured; tests/trainer/training/test_replicas.py
asserts on it.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def _two_replicas():
    import tensorflow as tf

    from trainer.training.strategy import create_strategy, split_cpu

    split_cpu(2)
    strategy = create_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    return tf, strategy


def float16_overflow_on_one_replica() -> dict:
    """float16 loss scaling with an inf in replica 1's batch at step 0, then clean batches."""
    tf, strategy = _two_replicas()
    import keras

    from trainer.training.optimizers import OptimizerSettings, make_optimizer
    from trainer.training.steps import StepSpec, TrainMetrics, train_function

    keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(np.int32)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(2, dtype="float32")])
        optimizer = make_optimizer(OptimizerSettings("sgd", momentum=0.0,
                                                     schedule="constant"), 0.5, 100,
                                   loss_scaling=True)
        optimizer.build(model.trainable_variables)
        metrics = TrainMetrics()
    poisoned = x.copy()
    poisoned[4:8] = np.inf  # rows 4-7 of the first global batch of 8: replica 1

    def batches(features):
        targets = np.eye(2, dtype=np.float32)[labels]
        return tf.data.Dataset.from_tensor_slices((features, labels, targets)).batch(8)

    def loss_fn(targets, logits):
        return tf.nn.softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))

    spec = StepSpec(model, loss_fn, None)
    steps = train_function(strategy, spec, optimizer, metrics, global_batch=8)
    before = [v.numpy().copy() for v in model.trainable_variables]
    scale_before = float(optimizer.dynamic_scale.numpy())
    first = iter(strategy.experimental_distribute_dataset(batches(poisoned)))
    steps(first, tf.constant(0, tf.int64), tf.constant(1))
    after = [v.numpy() for v in model.trainable_variables]
    unchanged = all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    finite = all(np.isfinite(a).all() for a in after)
    scale_after = float(optimizer.dynamic_scale.numpy())

    def loss_now():
        return float(np.mean(loss_fn(np.eye(2, dtype=np.float32)[labels], model(x)).numpy()))

    loss_start = loss_now()
    clean = iter(strategy.experimental_distribute_dataset(batches(x).repeat()))
    steps(clean, tf.constant(1, tf.int64), tf.constant(60))
    return {"weights_unchanged": unchanged, "weights_finite": finite,
            "scale_before": scale_before, "scale_after": scale_after,
            "loss_start": loss_start, "loss_end": loss_now()}


def synchronized_batchnorm() -> dict:
    """BatchNorm training on 2 replicas: its moving statistics follow the global batch, and
    both replicas' copies stay equal."""
    tf, strategy = _two_replicas()
    import keras

    from trainer.vggface.layers import SwitchableBatchNormalization

    def replica_moving_means(synchronized: bool):
        with strategy.scope():
            layer = SwitchableBatchNormalization(momentum=0.0, synchronized=synchronized)
            layer.build((None, 3))
        # Replica 0 sees values around 0, replica 1 around 10.
        data = np.concatenate([np.zeros((4, 3)), np.full((4, 3), 10.0)]).astype(np.float32)
        dataset = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(data).batch(8))

        @tf.function
        def step(batch):
            strategy.run(lambda x: layer(x, training=True), args=(batch,))

        step(next(iter(dataset)))
        return [v.numpy().tolist() for v in
                strategy.experimental_local_results(layer.moving_mean.value)]

    del keras
    return {"synchronized": replica_moving_means(True),
            "per_replica": replica_moving_means(False)}


def augmentation_differs_across_replicas() -> dict:
    """The same faces on both replicas, augmented in one training-step call."""
    tf, strategy = _two_replicas()

    from trainer.data.augmentation import Augmentation, step_key

    augmentation = Augmentation(True, rotation_degrees=20.0, random_erasing=0.5)
    faces = np.random.default_rng(0).uniform(0, 255, size=(8, 24, 24, 1)).astype(np.float32)
    same = np.concatenate([faces[:4], faces[:4]])
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(same).batch(8))

    @tf.function
    def step(batch, global_step):
        def replica(x):
            replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
            return augmentation.apply(x, tf.zeros([4, 2]), step_key(0, global_step,
                                                                    replica_id))[0]

        return strategy.run(replica, args=(batch,))

    batch = next(iter(dataset))
    at_step = [strategy.experimental_local_results(step(batch, tf.constant(s, tf.int64)))
               for s in (5, 5, 6)]
    replica0, replica1 = (a.numpy() for a in at_step[0])
    return {"replicas_differ": not np.allclose(replica0, replica1),
            "repeatable": all(np.array_equal(a.numpy(), b.numpy())
                              for a, b in zip(at_step[0], at_step[1], strict=True)),
            "steps_differ": not np.allclose(at_step[2][0].numpy(), replica0)}


CHECKS = {f.__name__: f for f in (float16_overflow_on_one_replica, synchronized_batchnorm,
                                  augmentation_differs_across_replicas)}

if __name__ == "__main__":
    print("RESULT " + json.dumps(CHECKS[sys.argv[1]]()))
