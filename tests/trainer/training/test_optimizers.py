"""Optimizers: the backbone's rate multiplier, decoupled weight decay, schedules, EMA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.training.optimizers import (
    OptimizerSettings,
    Plateau,
    averaged_weights,
    current_learning_rate,
    learning_rate_schedule,
    make_optimizer,
)


def _two_layer_model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="backbone")(inputs)
    frozen = keras.layers.Dense(4, name="frozen", trainable=False)(hidden)
    outputs = keras.layers.Dense(2, name="head")(frozen)
    return keras.Model(inputs, outputs)


def _one_step(model, optimizer):
    x, y = tf.constant(np.random.default_rng(0).normal(size=(8, 3)), tf.float32), tf.ones([8, 2])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x) - y))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables, strict=True))


def test_backbone_updates_are_the_multiplier_times_their_plain_size():
    keras.utils.set_random_seed(0)
    model = _two_layer_model()
    start = [v.numpy().copy() for v in model.weights]
    settings = OptimizerSettings("sgd", momentum=0.0, schedule="constant")
    backbone = model.get_layer("backbone").trainable_variables

    def update(multiplier):
        for variable, value in zip(model.weights, start, strict=True):
            variable.assign(value)
        optimizer = make_optimizer(settings, 0.1, 10, [(v, multiplier) for v in backbone])
        _one_step(model, optimizer)
        return [v.numpy() - s for v, s in zip(model.weights, start, strict=True)]

    plain, slowed = update(1.0), update(0.1)
    names = [v.path for v in model.weights]
    for name, a, b in zip(names, plain, slowed, strict=True):
        if name.startswith("backbone"):
            np.testing.assert_allclose(b, 0.1 * a, rtol=1e-5, atol=1e-8)
            assert np.abs(a).max() > 0
        elif name.startswith("frozen"):
            assert np.abs(a).max() == 0 and np.abs(b).max() == 0
        else:  # the head: the full rate
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-8)


def test_decoupled_weight_decay_shrinks_kernels_not_biases():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    kernel, bias = model.layers[0].kernel, model.layers[0].bias
    bias.assign([1.0, 1.0])
    before = kernel.numpy().copy()
    optimizer = make_optimizer(OptimizerSettings("sgd", momentum=0.0, weight_decay=0.5,
                                                 schedule="constant"), 0.1, 10)
    optimizer.apply_gradients([(tf.zeros_like(kernel), kernel), (tf.zeros_like(bias), bias)])
    np.testing.assert_allclose(kernel.numpy(), before * (1 - 0.1 * 0.5), rtol=1e-6)
    np.testing.assert_allclose(bias.numpy(), [1.0, 1.0])


def test_schedules_warm_up_then_decay_by_cosine_or_steps():
    cosine = learning_rate_schedule(OptimizerSettings(warmup_steps=4), 1.0, 14)
    rates = [float(cosine(step)) for step in range(14)]
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4] == pytest.approx(1.0) and rates[-1] < 0.05
    assert all(a >= b for a, b in zip(rates[4:], rates[5:], strict=False))
    step = learning_rate_schedule(OptimizerSettings(schedule="step", step_boundaries=(5, 10),
                                                    step_factor=0.1), 1.0, 15)
    assert [float(step(s)) for s in (0, 4, 5, 9, 10, 14)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    assert learning_rate_schedule(OptimizerSettings(schedule="plateau"), 0.3, 10) == 0.3


def test_plateau_lowers_the_rate_after_patience_epochs_without_improvement():
    optimizer = keras.optimizers.Adam(1e-3)
    plateau = Plateau(factor=0.5, patience=2, min_rate=3e-4)
    assert not plateau.update(1.0, optimizer)
    assert not plateau.update(1.1, optimizer)
    assert plateau.update(1.2, optimizer)
    assert current_learning_rate(optimizer) == pytest.approx(5e-4)
    assert not plateau.update(0.9, optimizer)  # improved: wait resets
    plateau.update(1.0, optimizer)
    plateau.update(1.0, optimizer)
    assert current_learning_rate(optimizer) == pytest.approx(3e-4)  # floored at min_rate


def test_averaged_weights_are_swapped_in_and_out():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = make_optimizer(OptimizerSettings("sgd", momentum=0.0, schedule="constant",
                                                 ema_decay=0.5), 0.1, 10)
    for _ in range(3):
        _one_step(model, optimizer)
    trained = [v.numpy().copy() for v in model.trainable_variables]
    averages = [v.numpy().copy() for v in optimizer._model_variables_moving_average]
    assert not all(np.allclose(a, t) for a, t in zip(averages, trained, strict=True))
    with averaged_weights(optimizer):
        for variable, average in zip(model.trainable_variables, averages, strict=True):
            np.testing.assert_allclose(variable.numpy(), average)
    for variable, value in zip(model.trainable_variables, trained, strict=True):
        np.testing.assert_allclose(variable.numpy(), value)
