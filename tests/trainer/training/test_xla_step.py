"""--jit_compile on one device: the whole training step (augmentation, forward, loss, gradients,
the optimizer's update with per-layer rates and decoupled decay, metric updates) is one XLA
program, and it trains exactly as the step whose forward and backward pass alone compile (the
only XLA step MirroredStrategy allows). Evaluation likewise. A tiny network: the step, not
ResNet-50's compile time, is under test."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.support.tiny_step import BATCH, STEPS, batches, tiny_model, tiny_step
from trainer.training import steps


def train(whole_step: bool, monkeypatch):
    """(weights, metrics, train_steps) after STEPS steps of the recipe's optimizer kind."""
    monkeypatch.setattr(steps, "compiles_whole_step", lambda strategy: whole_step)
    model = tiny_model()
    spec, optimizer = tiny_step(model)
    optimizer.build(model.trainable_variables)
    metrics = steps.TrainMetrics()
    strategy = tf.distribute.get_strategy()
    train_steps = steps.train_function(strategy, spec, optimizer, metrics, BATCH)
    train_steps(iter(batches()), tf.constant(0, tf.int64), tf.constant(STEPS))
    updated = [*model.weights, *optimizer.variables, *metrics.loss.variables,
               *metrics.accuracy.variables]
    return [w.numpy() for w in model.weights], metrics.values(), train_steps, updated


def test_the_whole_step_compiles_to_one_program_that_trains_as_the_split_one(monkeypatch):
    whole_weights, whole_metrics, whole, updated = train(True, monkeypatch)
    split_weights, split_metrics, _, _ = train(False, monkeypatch)
    for a, b in zip(whole_weights, split_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert whole_metrics == pytest.approx(split_metrics, rel=1e-5)

    # One program: its result is every variable the step updates (model, optimizer slots and
    # iteration count, both metrics' totals), not just the gradients.
    images, labels, targets = next(iter(batches()))
    hlo = whole.compiled_step.experimental_get_compiler_ir(
        (images, labels, targets), tf.constant(0, tf.int64))(stage="hlo")
    entry = next(line for line in hlo.splitlines() if line.startswith("ENTRY"))
    results = entry.split("->", 1)[1]
    assert results.count("[") == len(updated) > len(whole_weights)
