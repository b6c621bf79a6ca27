"""The training loop: phases of epochs of chunks of steps, with backups, validation and resume.

Why a custom loop rather than Model.fit: Keras 3.15's fit fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585), and TPUStrategy wants several steps per
tf.function call anyway. The loop is the TF Model Garden pattern: strategy.run on batches of
strategy.distribute_datasets_from_function, tf.function train and eval steps, Keras metric
objects, tf.train.Checkpoint backups and tf.summary logs.

The loop knows no model: it is handed a `TrainingPlan` (what the steps run, the data sources,
the phases and how to enter each, how to make a phase's optimizer), chosen once by the task.
"""

from __future__ import annotations

import dataclasses
import posixpath
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from trainer.config import TrainConfig
from trainer.data.input_pipeline import Pipeline
from trainer.training import checkpoints
from trainer.training.optimizers import Plateau, averaged_weights, current_learning_rate
from trainer.training.output_dirs import OutputDirs
from trainer.training.phases import Phase
from trainer.training.preemption import Preempted, PreemptionWatch
from trainer.training.progress import EpochProgress, RunClock, interactive
from trainer.training.steps import Evaluator, StepSpec, TrainMetrics, train_function
from trainer.training.strategy import Task, any_worker
from trainer.training.summaries import SummaryWriters


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    per_replica_batch: int
    steps_per_execution: int = 1
    backup_every_steps: int = 1000
    backup_every_minutes: float = 10.0
    shuffle_buffer: int = 2048
    seed: int = 0
    plateau: tuple[float, int, float] | None = None  # (factor, patience, min rate)

    @classmethod
    def from_config(cls, config: TrainConfig) -> LoopSettings:
        loop = config.loop
        return cls(loop.batch_size, loop.steps_per_execution, loop.backup_every_steps,
                   loop.backup_every_minutes, config.data.shuffle_buffer, loop.seed,
                   config.schedule.plateau)


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """What the loop trains, handed over by the task."""

    model: keras.Model  # backed up, and saved as last/best weights
    step: StepSpec  # what the training steps run
    train_source: object  # a data source of trainer.data (train_dataset, reading_errors)
    validation_source: object  # evaluated by step.model after every epoch
    phases: list[Phase]
    settings: LoopSettings
    enter_phase: Callable[[Phase], None]  # e.g. choose what trains
    make_optimizer: Callable[[Phase], keras.optimizers.Optimizer]


@dataclasses.dataclass
class PhaseState:
    """The tracked state of a running phase."""

    phase: Phase
    optimizer: keras.optimizers.Optimizer
    step: tf.Variable  # steps done in the phase
    plateau: Plateau
    backup: checkpoints.PhaseBackup
    train_steps: Callable

    @property
    def done(self) -> int:
        return int(self.step.numpy())


class Trainer:
    """Runs a TrainingPlan's phases, resuming from the newest backup."""

    def __init__(self, strategy: tf.distribute.Strategy, plan: TrainingPlan,
                 dirs: OutputDirs, task: Task, num_classes: int):
        self.strategy, self.plan, self.dirs, self.task = strategy, plan, dirs, task
        self.global_batch = plan.settings.per_replica_batch * strategy.num_replicas_in_sync
        self.steps_run = 0  # by this process: fewer than planned after a resume
        self.resumed_from: str | None = None
        # Metric values read mid-epoch need a collective op under multi-worker: only show a
        # live bar where every process would do the same.
        self.live = interactive() and not isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy)
        with strategy.scope():
            self.metrics = TrainMetrics()
            self.best_accuracy = tf.Variable(-1.0, trainable=False, name="best_val_accuracy")
        self.evaluator = Evaluator(strategy, plan.settings.per_replica_batch, num_classes,
                                   plan.step.jit_compile)
        self.writers = SummaryWriters(dirs.logs, task.is_chief)
        self.total_epochs = sum(p.epochs for p in plan.phases)
        self.clock = RunClock(sum(p.steps for p in plan.phases))

    def train(self) -> None:
        """Runs the phases; those before the newest one with a backup are already done."""
        with_backup = [i for i, p in enumerate(self.plan.phases)
                       if checkpoints.has_backup(self.dirs.backup, p.name)]
        start = with_backup[-1] if with_backup else 0
        watch = PreemptionWatch()
        try:
            for index, phase in enumerate(self.plan.phases):
                if index >= start:
                    self._run_phase(phase, watch, restore=index == start)
        finally:
            watch.close()

    def _start_phase(self, phase: Phase, restore: bool) -> PhaseState:
        self.plan.enter_phase(phase)
        with self.strategy.scope():
            optimizer = self.plan.make_optimizer(phase)
            optimizer.build(self.plan.step.model.trainable_variables)
            plateau = Plateau(*(self.plan.settings.plateau or (0.1, 1, 0.0)))
            step = tf.Variable(0, dtype=tf.int64, trainable=False, name="phase_step")
        backup = checkpoints.PhaseBackup(
            self.dirs.backup, phase.name, self.task, model=self.plan.model, optimizer=optimizer,
            step=step, best_val_accuracy=self.best_accuracy, **plateau.trackables())
        if restore and (path := backup.restore()):
            self.resumed_from = path
            logging.info("resumed %s phase from backup %s at step %d of %d", phase.name, path,
                         int(step.numpy()), phase.steps)
        train_steps = train_function(self.strategy, self.plan.step, optimizer, self.metrics,
                                     self.global_batch, self.plan.settings.steps_per_execution)
        return PhaseState(phase, optimizer, step, plateau, backup, train_steps)

    def _run_phase(self, phase: Phase, watch: PreemptionWatch, restore: bool) -> None:
        state = self._start_phase(phase, restore)
        if state.done >= phase.steps:
            return
        trainable = sum(int(np.prod(v.shape)) for v in self.plan.step.model.trainable_variables)
        logging.info("phase %s: %d epochs x %d steps, global batch %d on %d replica(s), "
                     "learning rate %g, trainable from %s (%d parameters)", phase.name,
                     phase.epochs, phase.steps_per_epoch, self.global_batch,
                     self.strategy.num_replicas_in_sync, phase.learning_rate,
                     phase.trainable_from, trainable)
        self.clock.start(phase.first_step + state.done)
        iterator = iter(self._train_data(phase.first_step + state.done))
        while state.done < phase.steps:
            self._run_epoch(state, iterator, watch)
        state.backup.wait()

    def _train_data(self, global_step: int):
        settings, source = self.plan.settings, self.plan.train_source

        def dataset_fn(context):
            local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
            position = global_step * local_replicas * settings.per_replica_batch
            return source.train_dataset(Pipeline.of(context), settings.per_replica_batch,
                                        settings.seed, position, settings.shuffle_buffer)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _run_epoch(self, state: PhaseState, iterator, watch: PreemptionWatch) -> None:
        phase, settings = state.phase, self.plan.settings
        epoch_in_phase = state.done // phase.steps_per_epoch
        epoch_start, epoch_end = (epoch_in_phase * phase.steps_per_epoch,
                                  (epoch_in_phase + 1) * phase.steps_per_epoch)
        progress = EpochProgress(
            f"epoch {phase.first_epoch + epoch_in_phase + 1}/{self.total_epochs} "
            f"({phase.name})", phase.steps_per_epoch, start_step=state.done - epoch_start,
            live=self.live)
        self.metrics.reset()
        last_backup = time.monotonic()
        while state.done < epoch_end:
            next_backup = (state.done // settings.backup_every_steps + 1) * \
                settings.backup_every_steps
            chunk = min(settings.steps_per_execution, epoch_end - state.done,
                        next_backup - state.done)
            with self.plan.train_source.reading_errors():
                state.train_steps(iterator, tf.constant(phase.first_step + state.done, tf.int64),
                                  tf.constant(chunk))
            state.step.assign_add(chunk)
            self.steps_run += chunk
            if self.live:
                progress.update(state.done - epoch_start, self.metrics.values())
            if state.done == epoch_end:
                break  # the epoch end saves a backup after the validation
            time_due = (settings.backup_every_minutes > 0 and time.monotonic() - last_backup
                        >= 60 * settings.backup_every_minutes)
            preempted, time_due = any_worker(self.strategy, watch.requested_here(), time_due)
            if preempted or time_due or state.done % settings.backup_every_steps == 0:
                state.backup.save(phase.first_step + state.done)
                last_backup = time.monotonic()
            if preempted:
                state.backup.wait()
                raise Preempted(phase.first_step + state.done)
        self._end_epoch(state, progress)
        if any_worker(self.strategy, watch.requested_here())[0]:
            state.backup.wait()
            raise Preempted(phase.first_step + state.done)

    def _end_epoch(self, state: PhaseState, progress: EpochProgress) -> None:
        """Validation (of the averaged weights, with --ema_decay), summaries, the plateau
        schedule, last/best weights and the backup."""
        phase = state.phase
        train_values = {**self.metrics.values(),
                        "learning_rate": current_learning_rate(state.optimizer)}
        global_step = phase.first_step + state.done
        with averaged_weights(state.optimizer):
            confusion, val_loss = self.evaluator.evaluate(self.plan.step.model,
                                                          self.plan.validation_source)
            val_accuracy = float(np.trace(confusion) / confusion.sum())
            self._save_epoch_weights(phase, global_step, val_accuracy, val_loss)
        validation = {"val_loss": val_loss, "val_accuracy": val_accuracy}
        self.writers.write(global_step, train_values, validation)
        if self.plan.settings.plateau and state.plateau.update(val_loss, state.optimizer):
            logging.info("validation loss has not improved for %d epochs: learning rate -> %g",
                         state.plateau.patience, current_learning_rate(state.optimizer))
        state.backup.save(global_step)
        progress.end({**train_values, **validation}, self.clock.remaining(global_step))

    def _save_epoch_weights(self, phase: Phase, global_step: int, val_accuracy: float,
                            val_loss: float) -> None:
        """last.weights.h5 every epoch, best.weights.h5 when validation accuracy improves."""
        improved = val_accuracy > float(self.best_accuracy.numpy())
        if improved:
            self.best_accuracy.assign(val_accuracy)
        if not self.task.is_chief:
            return
        last = posixpath.join(self.dirs.checkpoints, checkpoints.LAST_WEIGHTS)
        checkpoints.save_weights(self.plan.model, last)
        if improved:
            # A copy, not a second serialisation of the whole network (~1 s on CPU per save).
            checkpoints.copy_file(last, posixpath.join(self.dirs.checkpoints,
                                                       checkpoints.BEST_WEIGHTS))
            checkpoints.write_best_info(self.dirs.checkpoints, {
                "epoch": global_step // phase.steps_per_epoch, "phase": phase.name,
                "step": global_step, "val_accuracy": val_accuracy, "val_loss": val_loss})
