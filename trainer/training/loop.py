"""The training job: two phases (head, then fine-tuning from the cut) in one custom loop.

Why a custom loop rather than Model.fit: Keras 3.15's fit fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585), and TPUStrategy wants several steps per
tf.function call anyway. The loop is the TF Model Garden pattern: strategy.run on batches of
strategy.distribute_datasets_from_function, tf.function train and eval steps, Keras metric
objects, tf.train.Checkpoint backups (see trainer/checkpoints.py) and tf.summary logs.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import time
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from beam_preprocess.record_format import Manifest
from trainer.data import feature_cache
from trainer.serving import export
from trainer.training import checkpoints, summaries
from trainer.config import TrainConfig
from trainer.evaluation.metrics import (
    ConfusionMatrix,
    check_record_count,
    negative_log_likelihood,
    report_from_confusion,
    tta_probabilities,
    write_report,
)
from trainer.data.input_pipeline import (
    Augmentation,
    eval_dataset,
    load_manifest,
    naming_corrupt_files,
    train_dataset,
)
from trainer.training.losses import WeightedCrossEntropy, class_weights
from trainer.model import TRAIN_HEAD_ONLY, build_emotion_model, set_trainable, split_at_cut
from trainer.training.optimizers import Plateau, current_learning_rate, make_optimizer
from trainer.training.output_dirs import OutputDirs, resolve_output_dirs
from trainer.training.progress import EpochProgress, format_values, interactive
from trainer.training.strategy import Task, create_strategy, current_task, precision_policy, split_cpu


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    learning_rate: float
    trainable_from: str
    first_epoch: int  # epochs of the earlier phases
    first_step: int  # steps of the earlier phases


def plan_phases(config: TrainConfig, steps_per_epoch: int) -> list[Phase]:
    """Phase 1 trains the head on a frozen backbone, phase 2 fine-tunes from the cut."""
    wanted = [("head", config.head_epochs, config.learning_rate, TRAIN_HEAD_ONLY),
              ("fine_tune", config.epochs, config.fine_tune_learning_rate,
               config.trainable_from)]
    phases, epochs_before = [], 0
    for name, epochs, rate, trainable_from in wanted:
        if epochs > 0:
            phases.append(Phase(name, epochs, rate, trainable_from, epochs_before,
                                epochs_before * steps_per_epoch))
            epochs_before += epochs
    return phases


def steps_per_epoch(config: TrainConfig, train_records: int, global_batch: int) -> int:
    return config.steps_per_epoch or max(1, train_records // global_batch)


class Trainer:
    """Owns the model, metrics and writers of one job; `run` trains, evaluates and exports."""

    def __init__(self, config: TrainConfig, strategy: tf.distribute.Strategy,
                 manifest: Manifest, dirs: OutputDirs, task: Task):
        self.config, self.strategy, self.manifest, self.dirs, self.task = (
            config, strategy, manifest, dirs, task)
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = config.batch_size * self.replicas
        self.steps_per_epoch = steps_per_epoch(config, manifest.splits["train"].records,
                                               self.global_batch)
        self.phases = plan_phases(config, self.steps_per_epoch)
        self.total_steps = sum(p.epochs for p in self.phases) * self.steps_per_epoch
        self.steps_run = 0  # by this process: less than total_steps after a resume
        self.started = time.monotonic()
        self.resumed_from: str | None = None
        # Metric values read mid-epoch need a collective op under multi-worker: only show a
        # live bar where every process would do the same.
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.live = interactive() and not multi_worker
        weights = class_weights(config.class_weight, manifest.splits["train"].class_counts)
        logging.info("class weights (%s): %s", config.class_weight,
                     dict(zip(manifest.class_names, np.round(weights, 3).tolist(), strict=True)))
        self.loss_fn = WeightedCrossEntropy(manifest.num_classes, config.label_smoothing, weights)
        with strategy.scope():
            self.model = build_emotion_model(
                manifest.num_classes, image_size=manifest.image_size, input_channels=1,
                weights=config.weights, trainable_from=config.trainable_from,
                dense_units=config.dense_units, dropout=config.dropout,
                train_top_batchnorm=config.train_top_batchnorm)
            self.train_loss = keras.metrics.Mean(name="loss")
            self.train_accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
            self.eval_loss = keras.metrics.Mean(name="eval_loss")
            self.eval_confusion = ConfusionMatrix(manifest.num_classes)
            self.best_accuracy = tf.Variable(-1.0, trainable=False, name="best_val_accuracy")
        # With --cache_features the steps run only the part above the cut, on cached features
        # of the train and validation splits; the test split and the exports use the whole.
        self.step_model = self.model
        self.caches: dict[str, feature_cache.FeatureCache] = {}
        self.writers = self._summary_writers()
        self._eval_steps = {}
        self._eval_datasets = {}

    def cache_features(self) -> None:
        """Runs the frozen part once over the train (both views when flipping) and
        validation faces; from then on training and validation read the cache."""
        config, manifest = self.config, self.manifest
        frozen_part, self.step_model = split_at_cut(self.model, config.trainable_from)
        sources = [feature_cache.SplitSource(split, self._files(split),
                                             manifest.splits[split].records, views)
                   for split, views in (("train", 2 if config.augment else 1),
                                        ("validation", 1))]
        self.caches = feature_cache.cache_features(
            self.strategy, frozen_part, manifest, sources, config.batch_size,
            config.cache_dtype, self.dirs.cache, int(config.cache_memory_gb * 2**30),
            config.jit_compile)

    # --- datasets -------------------------------------------------------------------------

    def _files(self, split: str) -> list[str]:
        return self.manifest.split_files(split, self.config.data_dir)

    def _train_data(self, seed: int):
        config, manifest = self.config, self.manifest
        augmentation = (Augmentation(config.rotation_degrees, config.shift_fraction,
                                     config.zoom_fraction, config.random_erasing)
                        if config.augment else None)

        def dataset_fn(context):
            per_replica_batch = context.get_per_replica_batch_size(self.global_batch)
            if "train" in self.caches:
                return self.caches["train"].train_dataset(per_replica_batch,
                                                          config.shuffle_buffer, seed)
            return train_dataset(self._files("train"), manifest.image_size,
                                 manifest.num_classes, per_replica_batch, context,
                                 augmentation, config.shuffle_buffer, seed)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _eval_data(self, split: str):
        if split not in self._eval_datasets:
            records = self.manifest.splits[split].records

            def dataset_fn(context):
                if split in self.caches:
                    return self.caches[split].eval_dataset(self.config.batch_size,
                                                           self.replicas)
                return eval_dataset(self._files(split), self.manifest.image_size,
                                    self.manifest.num_classes, records, self.config.batch_size,
                                    self.replicas, context)

            self._eval_datasets[split] = self.strategy.distribute_datasets_from_function(
                dataset_fn)
        return self._eval_datasets[split]

    # --- steps ----------------------------------------------------------------------------

    def _train_function(self, optimizer):
        model, loss_fn, global_batch = self.step_model, self.loss_fn, self.global_batch

        def forward_backward(images, labels):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                per_face = loss_fn(labels, logits)
                loss = tf.nn.compute_average_loss(per_face, global_batch_size=global_batch)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                scaled_loss = optimizer.scale_loss(loss)
            return per_face, logits, tape.gradient(scaled_loss, model.trainable_variables)

        if self.config.jit_compile:
            forward_backward = tf.function(forward_backward, jit_compile=True)

        def replica_step(images, labels):
            per_face, logits, gradients = forward_backward(images, labels)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            self.train_loss.update_state(per_face)
            self.train_accuracy.update_state(labels, logits)

        @tf.function
        def train_steps(iterator, num_steps):
            for _ in tf.range(num_steps):
                self.strategy.run(replica_step, args=next(iterator))

        return train_steps

    def _eval_step(self, tta: bool, cached: bool):
        if (tta, cached) not in self._eval_steps:
            model = self.step_model if cached else self.model

            def predict_logits(images):
                return model(images, training=False)

            def replica_eval(images, labels, weights):
                probabilities = tta_probabilities(predict_logits, tf.cast(images, tf.float32),
                                                  tta)
                self.eval_loss.update_state(negative_log_likelihood(labels, probabilities),
                                            sample_weight=weights)
                self.eval_confusion.update_state(labels, probabilities, sample_weight=weights)

            @tf.function(jit_compile=self.config.jit_compile or None)
            def replica_eval_compiled(images, labels, weights):
                replica_eval(images, labels, weights)

            @tf.function
            def eval_step(batch):
                self.strategy.run(replica_eval_compiled, args=batch)

            self._eval_steps[tta, cached] = eval_step
        return self._eval_steps[tta, cached]

    def evaluate(self, split: str, tta: bool = False) -> tuple[np.ndarray, float]:
        """(confusion matrix, mean loss) of the current model on a whole split."""
        self.eval_loss.reset_state()
        self.eval_confusion.reset_state()
        step = self._eval_step(tta, cached=split in self.caches)
        with naming_corrupt_files(self._files(split), self.manifest.image_size,
                                  self.manifest.num_classes):
            for batch in self._eval_data(split):
                step(batch)
        confusion = np.asarray(self.eval_confusion.result())
        check_record_count(confusion, self.manifest.splits[split].records, split,
                           self.config.data_dir)
        return confusion, float(self.eval_loss.result())

    # --- outputs --------------------------------------------------------------------------

    def _summary_writers(self) -> dict:
        if not self.task.is_chief:
            noop = tf.summary.create_noop_writer()
            return {"train": noop, "validation": noop}
        return {name: tf.summary.create_file_writer(posixpath.join(self.dirs.logs, name))
                for name in ("train", "validation")}

    def _write_summaries(self, step: int, train: Mapping[str, float],
                         validation: Mapping[str, float]) -> None:
        for name, values in (("train", train), ("validation", validation)):
            with self.writers[name].as_default():
                for key, value in values.items():
                    summaries.scalar(key.removeprefix("val_"), value, step)
            self.writers[name].flush()

    def _save_epoch_weights(self, epoch: int, phase: Phase, global_step: int,
                            val_accuracy: float, val_loss: float) -> None:
        """last.weights.h5 every epoch, best.weights.h5 when validation accuracy improves."""
        improved = val_accuracy > float(self.best_accuracy.numpy())
        if improved:
            self.best_accuracy.assign(val_accuracy)
        if not self.task.is_chief:
            return
        checkpoints.save_weights(self.model, posixpath.join(self.dirs.checkpoints,
                                                            checkpoints.LAST_WEIGHTS))
        if improved:
            checkpoints.save_weights(self.model, posixpath.join(self.dirs.checkpoints,
                                                                checkpoints.BEST_WEIGHTS))
            checkpoints.write_best_info(self.dirs.checkpoints, {
                "epoch": epoch, "phase": phase.name, "step": global_step,
                "val_accuracy": val_accuracy, "val_loss": val_loss})

    # --- the loop -------------------------------------------------------------------------

    def _run_phase(self, phase: Phase, index: int, restore: bool) -> None:
        config = self.config
        set_trainable(self.model, phase.trainable_from, config.train_top_batchnorm)
        phase_steps = phase.epochs * self.steps_per_epoch
        with self.strategy.scope():
            optimizer = make_optimizer(config, phase.learning_rate, phase_steps,
                                       loss_scaling=keras.mixed_precision.global_policy().name
                                       == "mixed_float16")
            optimizer.build(self.model.trainable_variables)
            plateau = Plateau(config.plateau_factor, config.plateau_patience,
                              config.min_learning_rate)
            step = tf.Variable(0, dtype=tf.int64, trainable=False, name="phase_step")
        backup = checkpoints.PhaseBackup(
            self.dirs.backup, phase.name, self.task, model=self.model, optimizer=optimizer,
            step=step, best_val_accuracy=self.best_accuracy, **plateau.trackables())
        if restore and (path := backup.restore()):
            self.resumed_from = path
            logging.info("resumed %s phase from backup %s at step %d of %d", phase.name, path,
                         int(step.numpy()), phase_steps)
        done = int(step.numpy())
        if done >= phase_steps:
            return
        trainable = sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)
        logging.info("phase %s: %d epochs x %d steps, global batch %d on %d replica(s), "
                     "learning rate %g, trainable from %s (%d parameters)", phase.name,
                     phase.epochs, self.steps_per_epoch, self.global_batch, self.replicas,
                     phase.learning_rate, phase.trainable_from, trainable)
        train_steps = self._train_function(optimizer)
        # A resumed run draws a new shuffle instead of replaying the batches it trained on.
        seed = config.seed * 1_000_003 + index * 10_007 + done
        iterator = iter(self._train_data(seed))
        while done < phase_steps:
            done = self._run_epoch(phase, train_steps, iterator, optimizer, plateau, step,
                                   backup, done)

    def _run_epoch(self, phase, train_steps, iterator, optimizer, plateau, step, backup,
                   done: int) -> int:
        config, per_epoch = self.config, self.steps_per_epoch
        epoch_in_phase = done // per_epoch
        epoch = phase.first_epoch + epoch_in_phase + 1
        epoch_end = (epoch_in_phase + 1) * per_epoch
        total_epochs = sum(p.epochs for p in self.phases)
        progress = EpochProgress(f"epoch {epoch}/{total_epochs} ({phase.name})", per_epoch,
                                 start_step=done - epoch_in_phase * per_epoch, live=self.live)
        self.train_loss.reset_state()
        self.train_accuracy.reset_state()
        while done < epoch_end:
            next_backup = (done // config.backup_every_steps + 1) * config.backup_every_steps
            chunk = min(config.steps_per_execution, epoch_end - done, next_backup - done)
            with naming_corrupt_files(self._files("train"), self.manifest.image_size,
                                      self.manifest.num_classes):
                train_steps(iterator, tf.constant(chunk))
            done += chunk
            self.steps_run += chunk
            step.assign(done)
            if self.live:
                progress.update(done - epoch_in_phase * per_epoch, self._train_values())
            # The epoch-end save below follows the validation, so a backup at an epoch
            # boundary always means that epoch was evaluated.
            if done % config.backup_every_steps == 0 and done < epoch_end:
                backup.save(phase.first_step + done)
        train_values = self._train_values()
        train_values["learning_rate"] = current_learning_rate(optimizer)
        confusion, val_loss = self.evaluate("validation")
        val_accuracy = float(np.trace(confusion) / confusion.sum())
        global_step = phase.first_step + done
        self._write_summaries(global_step, train_values,
                              {"val_loss": val_loss, "val_accuracy": val_accuracy})
        if config.lr_schedule == "plateau" and plateau.update(val_loss, optimizer):
            logging.info("validation loss has not improved for %d epochs: learning rate -> %g",
                         config.plateau_patience, current_learning_rate(optimizer))
        self._save_epoch_weights(epoch, phase, global_step, val_accuracy, val_loss)
        backup.save(global_step)
        progress.end({**train_values, "val_loss": val_loss, "val_accuracy": val_accuracy})
        return done

    def _train_values(self) -> dict[str, float]:
        return {"loss": float(self.train_loss.result()),
                "accuracy": float(self.train_accuracy.result())}

    def train(self) -> None:
        """Runs the phases, resuming from the newest backup: phases before the one that has a
        backup are already done."""
        with_backup = [i for i, p in enumerate(self.phases)
                       if checkpoints.has_backup(self.dirs.backup, p.name)]
        start = with_backup[-1] if with_backup else 0
        if self.config.cache_features:
            self.cache_features()
        for index, phase in enumerate(self.phases):
            if index >= start:
                self._run_phase(phase, index, restore=index == start)

    def _wait_for_other_workers(self) -> None:
        """Under multi-worker, returns once every worker got here, so the chief has finished
        writing what the others are about to read. A single process has nobody to wait for."""
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            self.strategy.reduce(tf.distribute.ReduceOp.SUM,
                                 self.strategy.run(tf.function(lambda: tf.constant(1.0))),
                                 axis=None)

    def restore_best(self) -> None:
        best = posixpath.join(self.dirs.checkpoints, checkpoints.BEST_WEIGHTS)
        self._wait_for_other_workers()
        checkpoints.load_weights(self.model, best)
        logging.info("evaluating and exporting the best validation weights: %s", best)

    def final_report(self) -> dict:
        """Test-split metrics of the best weights; written to eval/ by the chief."""
        confusion, loss = self.evaluate("test", tta=self.config.tta)
        report = report_from_confusion(confusion, self.manifest.class_names, "test", loss=loss,
                                       tta=self.config.tta)
        report["training"] = {
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": sum(p.epochs for p in self.phases),
            "global_batch_size": self.global_batch,
            "replicas": self.replicas,
            "steps_run_by_last_process": self.steps_run,
            "resumed_from": self.resumed_from,
            "best_val_accuracy": float(self.best_accuracy.numpy()),
            "weights": "best",
            "seconds_in_last_process": round(time.monotonic() - self.started, 1),
        }
        if self.task.is_chief:
            path = write_report(report, self.dirs.eval)
            logging.info("test metrics: %s -> %s", format_values(
                {"accuracy": report["accuracy"], "loss": loss,
                 "macro_f1": report["macro_avg"]["f1"]}), path)
        return report

    def export(self) -> None:
        """The chief exports a float32, strategy-free copy of the model (loadable anywhere)."""
        if not self.task.is_chief:
            return
        keras.mixed_precision.set_global_policy("float32")
        config = self.config
        serving_model = build_emotion_model(
            self.manifest.num_classes, image_size=self.manifest.image_size, input_channels=1,
            weights=None, trainable_from=config.trainable_from,
            dense_units=config.dense_units, dropout=config.dropout,
            train_top_batchnorm=config.train_top_batchnorm)
        serving_model.set_weights(self.model.get_weights())
        names, size = self.manifest.class_names, self.manifest.image_size
        export.export_saved_model(serving_model, names, size, self.dirs.saved_model)
        keras_path = export.export_keras(serving_model, names, size, self.dirs.export)
        logging.info("exported %s and %s", self.dirs.saved_model, keras_path)


def run(config: TrainConfig, env: Mapping[str, str] = os.environ) -> dict:
    """The whole job; returns the test report."""
    split_cpu(config.logical_cpu_devices)
    strategy = create_strategy(config.strategy, config.tpu)
    task = current_task(strategy)
    policy = precision_policy(config.mixed_precision, strategy)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(config.seed)
    manifest = load_manifest(config.data_dir, config.image_size)
    dirs = resolve_output_dirs(config.job_dir, env)
    logging.info("strategy %s with %d replica(s), task %s/%d%s, policy %s; data %s (%d px, "
                 "%d classes)", type(strategy).__name__, strategy.num_replicas_in_sync,
                 task.task_type, task.task_id, " (chief)" if task.is_chief else "", policy,
                 config.data_dir, manifest.image_size, manifest.num_classes)
    trainer = Trainer(config, strategy, manifest, dirs, task)
    trainer.training.loop()
    trainer.restore_best()
    report = trainer.final_report()
    trainer.serving.export()
    return report
