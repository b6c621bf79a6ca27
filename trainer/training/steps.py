"""The distributed training and evaluation steps (tf.function + strategy.run).

A training step takes one batch per replica as the host sent it (uint8 faces, labels,
targets), augments it on the device with draws keyed by (seed, global step, replica), runs the
forward and backward pass and applies the gradients. Several steps run per tf.function call
(--steps_per_execution), which TPUs need to stay busy; on one device with --jit_compile a
call's steps are one XLA program.

Float16 loss scaling: Keras' LossScaleOptimizer, when it applies gradients under a
tf.distribute strategy, decides "skip the step and halve the scale" from the first local
replica's gradients only; an overflow on another replica then goes into the weights (measured:
weights -inf, scale unchanged), and under multi-worker each worker may take another branch of
a cond that holds a collective. So before the optimizer sees them, the replicas agree: if any
replica's gradients are not finite, every replica's become NaN, and every replica (and worker)
skips the step and halves the scale together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from trainer.data.augmentation import TestTimeAugmentation, step_key
from trainer.data.input_pipeline import Pipeline
from trainer.evaluation.metrics import ConfusionMatrix, negative_log_likelihood


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """What a training step computes, chosen once (full network or the part above the cut)."""

    model: keras.Model  # the model the steps run
    loss_fn: Callable  # (targets [B,C], logits [B,C]) -> per-face loss [B]
    prepare: Callable | None  # (inputs, targets, key) -> (inputs, targets): augmentation
    seed: int = 0
    jit_compile: bool = False


def agree_on_finiteness(gradients: list) -> list:
    """The gradients, or NaN on every replica when any replica's are not all finite."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients
                            if g is not None])
    overflows = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    factor = tf.where(overflows > 0, float("nan"), 1.0)
    return [None if g is None else g * tf.cast(factor, g.dtype) for g in gradients]


class TrainMetrics:
    """Running loss and accuracy of the training steps."""

    def __init__(self):
        self.loss = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def reset(self) -> None:
        self.loss.reset_state()
        self.accuracy.reset_state()

    def values(self) -> dict[str, float]:
        return {"loss": float(self.loss.result()), "accuracy": float(self.accuracy.result())}


def compiles_whole_step(strategy: tf.distribute.Strategy) -> bool:
    """Whether --jit_compile makes the whole replica step one XLA program (augmentation,
    forward, loss, gradients, finiteness agreement, optimizer update, metric updates): on one
    device (the default strategy, OneDeviceStrategy). TPUStrategy compiles the whole replica
    step by itself. Under MirroredStrategy and MultiWorkerMirroredStrategy only the forward
    and backward pass compile: the optimizer's update of mirrored variables goes through the
    strategy's cross-replica all-reduce, outside any one device's XLA program."""
    return not isinstance(strategy, (tf.distribute.MirroredStrategy,
                                     tf.distribute.MultiWorkerMirroredStrategy,
                                     tf.distribute.TPUStrategy))


def train_function(strategy: tf.distribute.Strategy, spec: StepSpec,
                   optimizer: keras.optimizers.Optimizer, metrics: TrainMetrics,
                   global_batch: int, steps_per_call: int = 1):
    """`train_steps(iterator, first_step, num_steps)`: num_steps (<= steps_per_call) steps
    from global step first_step on; its `compiled_step` is the XLA program of a call (see
    below)."""
    model, variables = spec.model, spec.model.trainable_variables
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def forward_backward(inputs, targets, key):
        if spec.prepare is not None:
            inputs, targets = spec.prepare(inputs, targets, key)
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            per_face = spec.loss_fn(targets, logits)
            loss = tf.nn.compute_average_loss(per_face, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled_loss = optimizer.scale_loss(loss)
        return per_face, logits, tape.gradient(scaled_loss, variables)

    whole_step = spec.jit_compile and compiles_whole_step(strategy)
    if spec.jit_compile and not whole_step:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(batch, step):
        inputs, labels, targets = batch
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        per_face, logits, gradients = forward_backward(inputs, targets,
                                                       step_key(spec.seed, step, replica))
        if loss_scaling:
            gradients = agree_on_finiteness(gradients)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        metrics.loss.update_state(per_face)
        metrics.accuracy.update_state(labels, logits)

    # One device with --jit_compile: a call's steps are one XLA program. The iterator cannot
    # enter XLA, so the call's batches come stacked, always steps_per_call of them (a short
    # chunk is padded and `count` says how many are real): one program for every chunk.
    @tf.function(jit_compile=True)
    def replica_steps(batches, count, first_step):
        def one_step(i):
            replica_step(_nth(batches, i), first_step + tf.cast(i, tf.int64))
            return i + 1

        # Not `for i in tf.range(count)`: XLA takes a loop's bound as a compile-time constant,
        # one program per chunk length. The fixed maximum keeps `count` a runtime argument.
        tf.while_loop(lambda i: i < count, one_step, [tf.constant(0)],
                      maximum_iterations=steps_per_call)

    @tf.function
    def train_steps(iterator, first_step, num_steps):
        if whole_step:
            batches = stacked_batches(iterator, num_steps, steps_per_call)
            strategy.run(replica_steps, args=(batches, num_steps, first_step))
            return
        for i in tf.range(num_steps):
            strategy.run(replica_step, args=(next(iterator), first_step + tf.cast(i, tf.int64)))

    # The XLA program of a call, for bench/xla_programs.py and its tests: the whole call
    # (batches, count, first_step) or only a step's forward and backward pass (None without
    # --jit_compile); forward_backward is that pass, (inputs, targets, key) -> (per-face loss,
    # logits, gradients).
    train_steps.compiled_step = (replica_steps if whole_step else
                                 forward_backward if spec.jit_compile else None)
    train_steps.forward_backward = forward_backward
    return train_steps


def stacked_batches(iterator, count, capacity: int):
    """`count` (<= capacity) batches from `iterator`, stacked on a new leading axis of length
    `capacity` (zeros after the first `count`)."""
    arrays = tf.nest.map_structure(
        lambda spec: tf.TensorArray(spec.dtype, size=count, element_shape=spec.shape),
        iterator.element_spec)
    for i in tf.range(count):
        arrays = _written(arrays, i, next(iterator))

    def padded(array):
        stacked = array.stack()
        padding = [[0, capacity - count]] + [[0, 0]] * (stacked.shape.rank - 1)
        return tf.ensure_shape(tf.pad(stacked, padding), [capacity, *stacked.shape[1:]])

    return tf.nest.map_structure(padded, arrays)


def _nth(stacked, index):
    return tf.nest.map_structure(lambda tensor: tensor[index], stacked)


def _written(arrays, index, batch):
    return tf.nest.map_structure(lambda array, tensor: array.write(index, tensor), arrays, batch)


class Evaluator:
    """Confusion matrix and mean loss of a model over a whole split, on every replica."""

    def __init__(self, strategy: tf.distribute.Strategy, per_replica_batch: int,
                 num_classes: int, jit_compile: bool = False):
        self._strategy, self._batch, self._jit = strategy, per_replica_batch, jit_compile
        with strategy.scope():
            self._loss = keras.metrics.Mean(name="eval_loss")
            self._confusion = ConfusionMatrix(num_classes)
        self._steps, self._datasets = {}, {}

    def evaluate(self, model: keras.Model, source,
                 tta: TestTimeAugmentation | None = None) -> tuple[np.ndarray, float]:
        """(confusion matrix, mean loss) of `model` on every face of `source` (a data source
        of trainer.data: eval_dataset, records, reading_errors)."""
        self._loss.reset_state()
        self._confusion.reset_state()
        step = self._step(model, tta or TestTimeAugmentation("none"))
        with source.reading_errors():
            for batch in self._dataset(source):
                step(batch)
        return np.asarray(self._confusion.result()), float(self._loss.result())

    def _dataset(self, source):
        if id(source) not in self._datasets:
            replicas = self._strategy.num_replicas_in_sync
            # The source is kept with its dataset, so that its id is never reused.
            self._datasets[id(source)] = (source, self._strategy.distribute_datasets_from_function(
                lambda context: source.eval_dataset(Pipeline.of(context), self._batch,
                                                    replicas)))
        return self._datasets[id(source)][1]

    def compiled_step(self, model: keras.Model, tta: TestTimeAugmentation | None = None):
        """The XLA program of one replica's evaluation step, (images, labels, targets,
        weights) -> None (it updates the metrics), for bench/xla_programs.py; None without
        jit_compile or where only the model compiles."""
        return self._programs(model, tta or TestTimeAugmentation("none"))[2]

    def _step(self, model: keras.Model, tta: TestTimeAugmentation):
        return self._programs(model, tta)[1]

    def _programs(self, model: keras.Model, tta: TestTimeAugmentation):
        """(model, the evaluation step, its whole-step XLA program or None)."""
        key = (id(model), tta)
        if key not in self._steps:
            def probabilities_of(images):
                return tta.probabilities(lambda x: model(x, training=False), images)

            whole_step = self._jit and compiles_whole_step(self._strategy)
            if self._jit and not whole_step:
                # Only the model runs compiled: the metric updates touch mirrored variables,
                # which an XLA cluster on one device cannot reach on the others.
                probabilities_of = tf.function(probabilities_of, jit_compile=True)

            def replica_eval(images, labels, targets, weights):
                del targets  # evaluation scores the (majority) label
                probabilities = probabilities_of(images)
                self._loss.update_state(negative_log_likelihood(labels, probabilities),
                                        sample_weight=weights)
                self._confusion.update_state(labels, probabilities, sample_weight=weights)

            if whole_step:  # the metric updates too, as one program with the model
                replica_eval = tf.function(replica_eval, jit_compile=True)

            @tf.function
            def eval_step(batch):
                self._strategy.run(replica_eval, args=batch)

            self._steps[key] = (model, eval_step, replica_eval if whole_step else None)
        return self._steps[key]
