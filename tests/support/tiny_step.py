"""A tiny network and the recipe's kind of training step around it: for tests of the step's
XLA programs, where ResNet-50's compile time is not under test."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from trainer.data.augmentation import Augmentation
from trainer.training import steps
from trainer.training.losses import WeightedCrossEntropy
from trainer.training.optimizers import OptimizerSettings, make_optimizer

SIDE, CLASSES, BATCH, STEPS = 12, 3, 4, 3


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((SIDE, SIDE, 1)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.BatchNormalization(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(CLASSES)])


def batches() -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, BATCH * STEPS).astype(np.int32)
    images = rng.integers(0, 256, (BATCH * STEPS, SIDE, SIDE, 1)).astype(np.uint8)
    return tf.data.Dataset.from_tensor_slices(
        (images, labels, tf.one_hot(labels, CLASSES))).batch(BATCH)


def tiny_step(model: keras.Model) -> tuple[steps.StepSpec, keras.optimizers.Optimizer]:
    """The step (device augmentation, label smoothing, XLA) and the recipe's optimizer kind
    (SGD Nesterov, decoupled decay, a per-layer rate) for `model`."""
    spec = steps.StepSpec(model, WeightedCrossEntropy(0.1, np.ones(CLASSES)),
                          Augmentation(flip=True, rotation_degrees=10,
                                       random_erasing=0.5).apply, seed=1, jit_compile=True)
    settings = OptimizerSettings("sgd", momentum=0.9, nesterov=True, weight_decay=1e-3)
    optimizer = make_optimizer(settings, 0.05, STEPS, multipliers=[(model.weights[0], 0.1)])
    return spec, optimizer
