"""The emotion task: what the trainer trains, chosen once from the config and the manifest.

It builds the model, the data sources (decoded into memory or streamed; cached features of the
frozen part with --cache_features), the loss, the device augmentation, the phases and their
optimizers, and hands them to the model-agnostic loop (trainer.training.loop) as a
TrainingPlan, in the manner of TF Model Garden's tasks.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from beam_preprocess.record_format import Manifest
from trainer.config import ConfigError, TrainConfig
from trainer.data.augmentation import Augmentation, TestTimeAugmentation
from trainer.data.feature_cache import SplitSource, cache_features
from trainer.data.input_pipeline import RecordFiles, choose_sources, this_pipeline
from trainer.data.manifest import data_digest
from trainer.model import backbone_variables, build_emotion_model, set_trainable, split_at_cut
from trainer.training.loop import LoopSettings, TrainingPlan
from trainer.training.losses import WeightedCrossEntropy, class_weights
from trainer.training.optimizers import OptimizerSettings, make_optimizer
from trainer.training.output_dirs import OutputDirs
from trainer.training.phases import Phase, plan_phases, steps_per_epoch
from trainer.training.steps import StepSpec
from trainer.vggface.layout import TRAIN_HEAD_ONLY


class EmotionTask:
    """The model, data and recipe of one training job."""

    def __init__(self, config: TrainConfig, manifest: Manifest,
                 strategy: tf.distribute.Strategy):
        self.config, self.manifest, self.strategy = config, manifest, strategy
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = config.loop.batch_size * self.replicas
        self.network_size = config.model.image_size or manifest.image_size
        self.steps_per_epoch = steps_per_epoch(manifest.splits["train"].records,
                                               self.global_batch, config.loop.steps_per_epoch)
        self.distribution_targets = self._check_targets()

    @functools.cached_property
    def model(self) -> keras.Model:
        """The model that trains (built, and its weights loaded, on first use)."""
        with self.strategy.scope():
            return self.build_model(self.config.model.weights)

    def build_model(self, weights) -> keras.Model:
        config = self.config.model
        return build_emotion_model(
            self.manifest.num_classes, image_size=self.network_size,
            input_size=self.manifest.image_size, weights=weights,
            trainable_from=config.trainable_from, dense_units=config.dense_units,
            dropout=config.dropout, train_top_batchnorm=config.train_top_batchnorm,
            zero_init_residual=config.zero_init_residual)

    def _check_targets(self) -> bool:
        if self.config.loss.ferplus_target == "majority":
            return False
        if not self.manifest.label_distribution:
            raise ConfigError(f"--ferplus_target=distribution needs FER+ records with vote "
                              f"distributions; {self.config.data.data_dir} holds "
                              f"{self.manifest.label_set} labels only (beam_preprocess "
                              "--labels ferplus writes them).")
        return True

    def source(self, split: str) -> RecordFiles:
        return RecordFiles.of(self.manifest, split, self.config.data.data_dir,
                              self.distribution_targets and split == "train")

    @property
    def augmentation(self) -> Augmentation | None:
        return Augmentation.from_config(self.config.augmentation)

    @property
    def test_time_augmentation(self) -> TestTimeAugmentation | None:
        return TestTimeAugmentation.from_config(self.config.evaluation)

    def phases(self) -> list[Phase]:
        schedule = self.config.schedule
        return plan_phases([("head", schedule.head_epochs, schedule.learning_rate,
                             TRAIN_HEAD_ONLY),
                            ("fine_tune", schedule.epochs, schedule.fine_tune_learning_rate,
                             self.config.model.trainable_from)], self.steps_per_epoch)

    def loss(self) -> WeightedCrossEntropy:
        loss = self.config.loss
        weights = class_weights(loss.class_weight, self.manifest.splits["train"].class_counts)
        logging.info("class weights (%s): %s", loss.class_weight, dict(zip(
            self.manifest.class_names, np.round(weights, 3).tolist(), strict=True)))
        return WeightedCrossEntropy(loss.label_smoothing, weights)

    def plan(self, dirs: OutputDirs) -> TrainingPlan:
        """Data sources chosen (and decoded or cached) once; the loop's plan."""
        sources = choose_sources([self.source("train"), self.source("validation")],
                                 this_pipeline(self.strategy),
                                 int(self.config.data.data_in_memory_gb * 2**30))
        step_model, augment = self.model, self.augmentation
        if self.config.cache.cache_features:
            step_model, sources = self._cached(sources, dirs)
            augment = None  # flips are the cached second view
        return TrainingPlan(self.model, self.step_spec(step_model, augment), sources["train"],
                            sources["validation"], self.phases(),
                            LoopSettings.from_config(self.config),
                            self.enter_phase, self.make_optimizer)

    def step_spec(self, step_model: keras.Model, augment: Augmentation | None) -> StepSpec:
        """What a training step of `step_model` computes (the model, or the part above the
        cut on cached features)."""
        prepare = augment.apply if augment else None
        return StepSpec(step_model, self.loss(), prepare, self.config.loop.seed,
                        self.config.runtime.jit_compile)

    def _cached(self, sources: dict, dirs: OutputDirs):
        """The part above the cut, and feature caches of the train and validation faces."""
        c = self.config
        frozen_part, trainable_part = split_at_cut(self.model, c.model.trainable_from)
        splits = [SplitSource("train", sources["train"], 2 if c.augmentation.augment else 1),
                  SplitSource("validation", sources["validation"], 1)]
        caches = cache_features(
            self.strategy, frozen_part, splits, per_replica_batch=c.loop.batch_size,
            store_dtype=c.cache.cache_dtype, cache_dir=dirs.cache,
            memory_budget_bytes=int(c.cache.cache_memory_gb * 2**30),
            data_digest=data_digest(self.manifest), jit_compile=c.runtime.jit_compile)
        return trainable_part, caches

    def enter_phase(self, phase: Phase) -> None:
        set_trainable(self.model, phase.trainable_from, self.config.model.train_top_batchnorm,
                      synchronized_batchnorm=self.replicas > 1)

    def make_optimizer(self, phase: Phase) -> keras.optimizers.Optimizer:
        settings = OptimizerSettings.from_config(self.config.optimizer, self.config.schedule,
                                                 self.steps_per_epoch)
        multipliers = [(v, self.config.optimizer.backbone_lr_multiplier)
                       for v in backbone_variables(self.model)]
        loss_scaling = keras.mixed_precision.global_policy().name == "mixed_float16"
        return make_optimizer(settings, phase.learning_rate, phase.steps, multipliers,
                              loss_scaling)
