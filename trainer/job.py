"""The whole training job: where it runs, what it trains, the report and the exports.

    strategy and precision -> manifest -> resume guard -> task (model, data, recipe)
    -> training loop -> best weights -> test report -> SavedModel and .keras exports
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Mapping

import keras
import tensorflow as tf
from absl import logging

from beam_preprocess.record_format import MANIFEST_FILENAME
from trainer import run_record
from trainer.config import TrainConfig
from trainer.data.manifest import data_digest, load_manifest
from trainer.evaluation.metrics import check_record_count, report_from_confusion
from trainer.evaluation.report_files import write_report
from trainer.export import provenance, saved_model
from trainer.task import EmotionTask
from trainer.training import checkpoints
from trainer.training.loop import Trainer
from trainer.training.output_dirs import OutputDirs, resolve_output_dirs
from trainer.training.progress import format_values
from trainer.training.steps import Evaluator
from trainer.training.strategy import (
    Task,
    create_strategy,
    current_task,
    precision_policy,
    split_cpu,
    unseen_gpus_warning,
    wait_for_other_workers,
)


def run(config: TrainConfig, env: Mapping[str, str] = os.environ) -> dict:
    """Trains, evaluates and exports; returns the test report."""
    started = time.monotonic()
    runtime = config.runtime
    split_cpu(runtime.logical_cpu_devices)
    if warning := unseen_gpus_warning():
        logging.warning(warning)
    strategy = create_strategy(runtime.strategy, runtime.tpu,
                               runtime.collective_timeout_seconds)
    task = current_task(strategy)
    policy = precision_policy(runtime.mixed_precision, strategy)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(config.loop.seed)
    manifest = load_manifest(config.data.data_dir)
    dirs = resolve_output_dirs(config.loop.job_dir, env)
    emotion = EmotionTask(config, manifest, strategy)
    logging.info("strategy %s with %d replica(s), task %s/%d%s, policy %s; data %s (%d px "
                 "records, %d classes), network at %d px", type(strategy).__name__,
                 strategy.num_replicas_in_sync, task.task_type, task.task_id,
                 " (chief)" if task.is_chief else "", policy, config.data.data_dir,
                 manifest.image_size, manifest.num_classes, emotion.network_size)
    _guard_resume(config, emotion, dirs, task, strategy)
    trainer = Trainer(strategy, emotion.plan(dirs), dirs, task, manifest.num_classes)
    trainer.train()
    _restore_best(emotion.model, dirs, strategy)
    report = final_report(emotion, strategy)
    report["training"] = _training_summary(emotion, trainer, started)
    if task.is_chief:
        _write(report, dirs)
        export_models(emotion, dirs)
    return report


def _guard_resume(config: TrainConfig, emotion: EmotionTask, dirs: OutputDirs, task: Task,
                  strategy: tf.distribute.Strategy) -> None:
    """Stops a rerun whose settings differ from the job_dir's run (see trainer/run_record);
    every worker reads the record before the chief writes it."""
    loop = config.loop
    if loop.start_over and task.is_chief:
        if run_record.started_by(loop.job_dir, loop.run_id):
            logging.info("run %s started over already: resuming it", loop.run_id)
        else:
            run_record.discard_previous_run(dirs, loop.job_dir)
    wait_for_other_workers(strategy)
    settings = run_record.run_settings(config, data_digest(emotion.manifest),
                                       emotion.replicas, emotion.steps_per_epoch)
    run_record.check(dirs, loop.job_dir, settings, emotion.replicas)
    wait_for_other_workers(strategy)
    if task.is_chief:
        run_record.record(loop.job_dir, settings, loop.run_id)


def _restore_best(model: keras.Model, dirs: OutputDirs, strategy) -> None:
    best = posixpath.join(dirs.checkpoints, checkpoints.BEST_WEIGHTS)
    wait_for_other_workers(strategy)
    checkpoints.load_weights(model, best)
    logging.info("evaluating and exporting the best validation weights: %s", best)


def final_report(emotion: EmotionTask, strategy: tf.distribute.Strategy) -> dict:
    """Test-split metrics of the model as it is (the best weights), with --tta."""
    config, manifest = emotion.config, emotion.manifest
    evaluator = Evaluator(strategy, config.loop.batch_size, manifest.num_classes,
                          config.runtime.jit_compile)
    confusion, loss = evaluator.evaluate(emotion.model, emotion.source("test"),
                                         emotion.test_time_augmentation)
    check_record_count(confusion, manifest.splits["test"].records, "test",
                       config.data.data_dir)
    return report_from_confusion(confusion, manifest.class_names, "test", loss=loss,
                                 tta=config.evaluation.tta)


def _training_summary(emotion: EmotionTask, trainer: Trainer, started: float) -> dict:
    phases = emotion.phases()
    return {
        "total_steps": sum(p.steps for p in phases),
        "steps_per_epoch": emotion.steps_per_epoch,
        "epochs": sum(p.epochs for p in phases),
        "global_batch_size": emotion.global_batch,
        "replicas": emotion.replicas,
        "steps_run_by_last_process": trainer.steps_run,
        "resumed_from": trainer.resumed_from,
        "best_val_accuracy": float(trainer.best_accuracy.numpy()),
        "weights": "best",
        "seconds_in_last_process": round(time.monotonic() - started, 1),
    }


def _write(report: dict, dirs: OutputDirs) -> None:
    path = write_report(report, dirs.eval)
    logging.info("test metrics: %s -> %s", format_values(
        {"accuracy": report["accuracy"], "loss": report["loss"],
         "macro_f1": report["macro_avg"]["f1"]}), path)


def export_models(emotion: EmotionTask, dirs: OutputDirs) -> None:
    """A float32, strategy-free copy of the model (loadable anywhere), as a SavedModel (with
    a TTA endpoint under --tta) and a .keras file."""
    keras.mixed_precision.set_global_policy("float32")
    serving_model = emotion.build_model(weights=None)
    serving_model.set_weights(emotion.model.get_weights())
    names = emotion.manifest.class_names
    trained_on = _provenance(emotion)
    saved_model.export_saved_model(serving_model, names, dirs.saved_model,
                              emotion.test_time_augmentation, trained_on)
    keras_path = saved_model.export_keras(serving_model, names, dirs.export, trained_on)
    logging.info("exported %s and %s (%s)", dirs.saved_model, keras_path,
                 provenance.describe(trained_on))


def _provenance(emotion: EmotionTask) -> dict:
    manifest_path = posixpath.join(emotion.config.data.data_dir, MANIFEST_FILENAME)
    with tf.io.gfile.GFile(manifest_path, "rb") as f:
        manifest_bytes = f.read()
    return provenance.training_provenance(emotion.config, emotion.manifest, manifest_bytes,
                                          emotion.network_size)
