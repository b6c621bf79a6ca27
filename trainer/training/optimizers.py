"""Optimizers and learning-rate schedules for one training phase."""

from __future__ import annotations

import keras
import tensorflow as tf

from trainer.config import TrainConfig


def make_optimizer(config: TrainConfig, learning_rate: float, total_steps: int,
                   loss_scaling: bool) -> keras.optimizers.Optimizer:
    """Adam or SGD+momentum; with the cosine schedule the rate decays to 0 over `total_steps`.

    The plateau and constant schedules keep a plain rate that `Plateau` may lower. With
    `loss_scaling` (float16) the optimizer is wrapped in a LossScaleOptimizer.
    """
    rate = learning_rate
    if config.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate,
                                                      decay_steps=max(1, total_steps))
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(rate)
    else:
        optimizer = keras.optimizers.SGD(rate, momentum=config.momentum)
    if loss_scaling:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    rate = optimizer.learning_rate
    return float(tf.convert_to_tensor(rate.value if hasattr(rate, "value") else rate))


class Plateau:
    """ReduceLROnPlateau for a custom loop: multiplies the rate by `factor` after `patience`
    epochs without a lower validation loss. Its state is variables, saved with the backup."""

    def __init__(self, factor: float, patience: int, min_rate: float):
        self.factor, self.patience, self.min_rate = factor, patience, min_rate
        self.best_loss = tf.Variable(float("inf"), trainable=False, name="plateau_best_loss")
        self.wait = tf.Variable(0, trainable=False, name="plateau_wait")

    def trackables(self) -> dict:
        return {"plateau_best_loss": self.best_loss, "plateau_wait": self.wait}

    def update(self, val_loss: float, optimizer: keras.optimizers.Optimizer) -> bool:
        """Records an epoch's validation loss; returns True when it lowered the rate."""
        if val_loss < float(self.best_loss.numpy()):
            self.best_loss.assign(val_loss)
            self.wait.assign(0)
            return False
        self.wait.assign_add(1)
        if int(self.wait.numpy()) < self.patience:
            return False
        self.wait.assign(0)
        new_rate = max(current_learning_rate(optimizer) * self.factor, self.min_rate)
        optimizer.learning_rate = new_rate
        return True
