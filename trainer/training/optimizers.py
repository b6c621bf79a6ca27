"""Optimizers and learning-rate schedules for one training phase.

Keras optimizers have one learning rate for all variables; the published fine-tuning recipes
train the backbone at a fraction of the head's rate (Albanie et al.: 0.1). `make_optimizer`
therefore subclasses the chosen Keras optimizer so that each variable's step uses the phase's
rate times that variable's multiplier, and applies decoupled weight decay (AdamW-style,
lr * decay * w) with the same multiplier, to kernels only (BatchNorm and biases are not
decayed, the common practice). Float16 wraps it in Keras' LossScaleOptimizer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import keras
import tensorflow as tf

from trainer.config import OptimizerConfig, ScheduleConfig


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    name: str = "adam"  # adam, adamw, sgd
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine, step, plateau, constant
    warmup_steps: int = 0
    step_boundaries: tuple[int, ...] = ()  # steps within the phase
    step_factor: float = 0.1
    ema_decay: float = 0.0

    @classmethod
    def from_config(cls, optimizer: OptimizerConfig, schedule: ScheduleConfig,
                    steps_per_epoch: int) -> OptimizerSettings:
        """The settings of `optimizer` and `schedule`, their epochs counted in steps."""
        return cls(optimizer.optimizer, optimizer.momentum, optimizer.nesterov,
                   optimizer.weight_decay, schedule.lr_schedule,
                   epochs_to_steps(schedule.warmup_epochs, steps_per_epoch),
                   tuple(epochs_to_steps(b, steps_per_epoch) for b in schedule.lr_boundaries),
                   schedule.lr_step_factor, optimizer.ema_decay)


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """0 -> the rate `after` starts with over `warmup_steps`, then `after` (from step 0)."""

    def __init__(self, after, warmup_steps: int):
        self.after, self.warmup_steps = after, warmup_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        start_rate = self.after(0)
        warming = start_rate * (step + 1.0) / float(max(1, self.warmup_steps))
        return tf.where(step < self.warmup_steps, warming,
                        self.after(step - self.warmup_steps))

    def get_config(self):
        return {"warmup_steps": self.warmup_steps}


def learning_rate_schedule(settings: OptimizerSettings, rate: float, phase_steps: int):
    """The phase's rate (a float for plateau and constant, which `Plateau` may lower)."""
    warmup = min(settings.warmup_steps, max(0, phase_steps - 1))
    if settings.schedule == "cosine":
        after = keras.optimizers.schedules.CosineDecay(rate, max(1, phase_steps - warmup))
    elif settings.schedule == "step":
        # PiecewiseConstantDecay keeps a value up to and including its boundary step: the
        # rate drops once `b` steps are done.
        boundaries = [max(0, b - warmup - 1) for b in settings.step_boundaries]
        values = [rate * settings.step_factor ** i for i in range(len(boundaries) + 1)]
        after = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    else:
        return rate
    return LinearWarmup(after, warmup) if warmup else after


def _optimizer_class(settings: OptimizerSettings):
    if settings.name == "sgd":
        return keras.optimizers.SGD, {"momentum": settings.momentum,
                                      "nesterov": settings.nesterov}
    if settings.name in ("adam", "adamw"):
        return keras.optimizers.Adam, {}
    raise ValueError(f"unknown optimizer {settings.name!r}")


def _decays(variable) -> bool:
    return len(variable.shape) > 1  # kernels; not biases, BatchNorm gamma/beta


def make_optimizer(settings: OptimizerSettings, rate: float, phase_steps: int,
                   multipliers: list | None = None,
                   loss_scaling: bool = False) -> keras.optimizers.Optimizer:
    """The phase's optimizer. `multipliers` are (variable, factor) pairs: the factor of the
    learning rate (and of the weight decay) of that variable; the others use 1."""
    base, extra = _optimizer_class(settings)
    decay = settings.weight_decay if settings.name in ("adamw", "sgd") else 0.0
    ema = {"use_ema": True, "ema_momentum": settings.ema_decay} if settings.ema_decay else {}

    class LayerwiseRates(base):
        """`base` whose step for each variable uses rate x its multiplier."""

        def update_step(self, gradient, variable, learning_rate):
            factor = self._rate_factors.get(self._var_key(variable), 1.0)
            if factor != 1.0:
                learning_rate = learning_rate * factor
            if decay and _decays(variable):
                variable.assign_sub(variable * tf.cast(decay * learning_rate, variable.dtype))
            return super().update_step(gradient, variable, learning_rate)

    optimizer = LayerwiseRates(learning_rate_schedule(settings, rate, phase_steps),
                               **extra, **ema)
    optimizer._rate_factors = {optimizer._var_key(v): float(m)
                               for v, m in multipliers or ()}
    if loss_scaling:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def inner_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    return getattr(optimizer, "inner_optimizer", optimizer)


@contextlib.contextmanager
def averaged_weights(optimizer: keras.optimizers.Optimizer):
    """With --ema_decay, the model's trainable variables hold their moving averages inside the
    block (what is evaluated and saved), and their trained values again after it."""
    inner = inner_optimizer(optimizer)
    if not getattr(inner, "use_ema", False):
        yield
        return
    # Keras keeps the averages in the optimizer, in the order of its trainable variables.
    pairs = list(zip(inner._trainable_variables, inner._model_variables_moving_average,
                     strict=True))
    trained = [tf.identity(variable.value) for variable, _ in pairs]
    for variable, average in pairs:
        variable.assign(average)
    try:
        yield
    finally:
        for (variable, _), value in zip(pairs, trained, strict=True):
            variable.assign(value)


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    rate = optimizer.learning_rate
    return float(tf.convert_to_tensor(rate.value if hasattr(rate, "value") else rate))


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
    return int(math.ceil(epochs * steps_per_epoch - 1e-9))


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
