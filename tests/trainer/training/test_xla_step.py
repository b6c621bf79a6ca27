"""--jit_compile on one device: a call's training steps (augmentation, forward, loss,
gradients, the optimizer's update with per-layer rates and decoupled decay, metric updates)
are one XLA program, and they train exactly as the steps whose forward and backward pass alone
compile (the only XLA step MirroredStrategy allows). A tiny network: the step, not ResNet-50's
compile time, is under test."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.support.tiny_step import BATCH, STEPS, batches, tiny_model, tiny_step
from trainer.training import steps


def train(whole_step: bool, monkeypatch, chunks=(STEPS,)):
    """(weights, metrics, train_steps, updated variables) after the chunks of steps (one call
    each) of the recipe's optimizer kind."""
    monkeypatch.setattr(steps, "compiles_whole_step", lambda strategy: whole_step)
    model = tiny_model()
    spec, optimizer = tiny_step(model)
    optimizer.build(model.trainable_variables)
    metrics = steps.TrainMetrics()
    strategy = tf.distribute.get_strategy()
    train_steps = steps.train_function(strategy, spec, optimizer, metrics, BATCH,
                                       steps_per_call=max(chunks))
    iterator, done = iter(strategy.experimental_distribute_dataset(batches())), 0
    for chunk in chunks:
        train_steps(iterator, tf.constant(done, tf.int64), tf.constant(chunk))
        done += chunk
    updated = [*model.weights, *optimizer.variables, *metrics.loss.variables,
               *metrics.accuracy.variables]
    return [w.numpy() for w in model.weights], metrics.values(), train_steps, updated


def assert_same_training(a, b):
    for x, y in zip(a[0], b[0], strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    assert a[1] == pytest.approx(b[1], rel=1e-5)


def test_a_calls_steps_compile_to_one_program_that_trains_as_the_split_steps(monkeypatch):
    whole = train(True, monkeypatch)
    assert_same_training(whole, train(False, monkeypatch))

    # One program for the call's STEPS steps: its result is every variable a step updates
    # (model, optimizer slots and iteration count, both metrics' totals), not just gradients,
    # and the steps are a loop inside it.
    program = whole[2].compiled_step
    args = ((*(tf.stack([t] * STEPS) for t in next(iter(batches()))),), tf.constant(STEPS),
            tf.constant(0, tf.int64))
    hlo = program.experimental_get_compiler_ir(*args)(stage="hlo")
    entry = next(line for line in hlo.splitlines() if line.startswith("ENTRY"))
    parameters, results = entry.split("->", 1)
    assert results.count("[") == len(whole[3]) > len(whole[0])
    assert " while(" in hlo
    # The steps' count is a runtime argument, not a constant XLA compiles into the program
    # (which would make one program per chunk length): every argument is a parameter.
    captured = program.get_concrete_function(*args).captured_inputs
    assert parameters.count(": ") == 5 + len(captured)


def test_a_short_chunk_runs_in_the_same_program_and_trains_as_single_steps(monkeypatch):
    """An epoch's last chunk is shorter than --steps_per_execution: padded, not recompiled."""
    chunked = train(True, monkeypatch, chunks=(2, 1))
    assert_same_training(chunked, train(True, monkeypatch, chunks=(1, 1, 1)))
    assert chunked[2].compiled_step.experimental_get_tracing_count() == 1
