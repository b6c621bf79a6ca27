"""The model-agnostic loop on a tiny model, in process: exact resume, and what --ema_decay
evaluates and saves."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.data.augmentation import Augmentation
from trainer.data.input_pipeline import DecodedSplit
from trainer.training import loop
from trainer.training.losses import WeightedCrossEntropy
from trainer.training.optimizers import OptimizerSettings, make_optimizer
from trainer.training.output_dirs import resolve_output_dirs
from trainer.training.phases import plan_phases
from trainer.training.preemption import Preempted
from trainer.training.steps import StepSpec
from trainer.training.strategy import Task

SIDE, CLASSES, BATCH = 8, 3, 4


def split(name: str, count: int, seed: int) -> DecodedSplit:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count).astype(np.int32)
    images = (rng.uniform(0, 60, (count, SIDE, SIDE, 1)) + 80 * labels[:, None, None, None])
    return DecodedSplit(name, tf.constant(images.astype(np.uint8)), tf.constant(labels),
                        tf.one_hot(labels, CLASSES), count)


def plan(ema_decay: float = 0.0) -> loop.TrainingPlan:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(CLASSES)])
    phases = plan_phases([("fine_tune", 3, 0.05, "all")], steps_per_epoch=24 // BATCH)
    settings = OptimizerSettings("adam", schedule="cosine", ema_decay=ema_decay)
    return loop.TrainingPlan(
        model, StepSpec(model, WeightedCrossEntropy(0.0, np.ones(CLASSES)),
                        Augmentation(flip=True, random_erasing=0.5).apply, seed=1),
        split("train", 24, 0), split("validation", 9, 1), phases,
        loop.LoopSettings(BATCH, backup_every_steps=1000, backup_every_minutes=0),
        enter_phase=lambda phase: None,
        make_optimizer=lambda phase: make_optimizer(settings, phase.learning_rate,
                                                    phase.steps))


def train(job_dir, the_plan) -> loop.Trainer:
    trainer = loop.Trainer(tf.distribute.get_strategy(), the_plan,
                           resolve_output_dirs(str(job_dir), {}), Task(None, 0, True), CLASSES)
    trainer.train()
    return trainer


def test_a_job_stopped_mid_epoch_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Data stream, augmentation draws, optimizer state and schedule all continue where the
    backup was saved: the resumed job ends with the weights of an uninterrupted one."""
    straight = plan()
    train(tmp_path / "straight", straight)

    polls = []

    def sigterm_at_the_seventh_step(self):
        polls.append(1)
        return len(polls) == 7

    interrupted = plan()
    with monkeypatch.context() as patch:
        patch.setattr(loop.PreemptionWatch, "requested_here", sigterm_at_the_seventh_step)
        with pytest.raises(Preempted) as stopped:
            train(tmp_path / "resumed", interrupted)
    assert stopped.value.step == 7  # polls after steps 1-5, at the epoch end (6), at 7
    resumed = plan()  # a new process: new model, same initialisation
    trainer = train(tmp_path / "resumed", resumed)
    assert trainer.steps_run == 18 - stopped.value.step
    for a, b in zip(straight.model.weights, resumed.model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_with_ema_the_saved_weights_are_the_moving_averages(tmp_path):
    """--ema_decay: validation scores, and last/best weights hold, the moving averages; the
    training goes on from the trained weights."""
    from trainer.training.summaries import read_scalars

    ema = plan(ema_decay=0.8)
    trainer = train(tmp_path / "job", ema)
    trained = [v.numpy().copy() for v in ema.model.weights]
    ema.model.load_weights(tmp_path / "job/checkpoints/last.weights.h5")
    assert not all(np.allclose(a, v.numpy()) for a, v in zip(trained, ema.model.weights,
                                                              strict=True))
    confusion, _ = trainer.evaluator.evaluate(ema.model, ema.validation_source)
    logged = dict(read_scalars(str(tmp_path / "job/logs/validation"))["accuracy"])
    assert np.trace(confusion) / confusion.sum() == pytest.approx(logged[18])
