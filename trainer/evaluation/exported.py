"""Evaluating exported models on a split of a preprocessed data directory.

One export, or several averaged (an ensemble: the mean of their probabilities, the way the
published results above 75 % on fer2013 are made), optionally with test-time augmentation.
Exports are read by the one loader (trainer.export.loader), local or gs://.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from beam_preprocess.record_format import ManifestError
from trainer.data.augmentation import TestTimeAugmentation
from trainer.data.input_pipeline import Pipeline, RecordFiles
from trainer.data.manifest import load_manifest
from trainer.evaluation.metrics import (
    check_record_count,
    negative_log_likelihood,
    report_from_confusion,
)
from trainer.export.loader import ExportedModel, ModelLoadError, load_exported


def _check_fits(model: ExportedModel, manifest, data_dir: str) -> None:
    if model.records_side != manifest.image_size:
        raw = " (TFLite and ONNX exports take raw faces: records written with --image_size 48)" \
            if model.records_side != model.image_size else ""
        raise ModelLoadError(f"{model.path} takes {model.records_side} px faces{raw} but "
                             f"{data_dir} holds {manifest.image_size} px records.")
    if model.class_names != manifest.class_names:
        raise ModelLoadError(f"{model.path} was trained on classes {model.class_names}, but "
                             f"{data_dir} has {manifest.class_names}.")


class _Tally:
    """Confusion matrix and summed loss of one set of probabilities."""

    def __init__(self, num_classes: int):
        self.confusion = np.zeros((num_classes, num_classes))
        self.loss_sum = 0.0

    def add(self, labels, probabilities, weights) -> None:
        self.confusion += tf.math.confusion_matrix(
            labels, tf.argmax(probabilities, axis=1), self.confusion.shape[0],
            weights=weights, dtype=tf.float64).numpy()
        self.loss_sum += float(tf.reduce_sum(negative_log_likelihood(labels, probabilities)
                                             * weights))


def evaluate_exported(model_paths: list[str], data_dir: str, split: str = "test",
                      tta: str = "none", crop_fraction: float = 0.875,
                      batch_size: int = 64) -> dict:
    """The metrics report of the (averaged) exports on `split`; with several models it lists
    each member's accuracy and loss under "members"."""
    manifest = load_manifest(data_dir)
    if split not in manifest.splits:
        raise ManifestError(f"{data_dir}: no split {split!r}; the manifest has "
                            f"{sorted(manifest.splits)}")
    models = [load_exported(path) for path in model_paths]
    for model in models:
        _check_fits(model, manifest, data_dir)
    augmentation = TestTimeAugmentation(tta, crop_fraction)
    source = RecordFiles.of(manifest, split, data_dir)
    members = [_Tally(manifest.num_classes) for _ in models]
    ensemble = _Tally(manifest.num_classes)
    with source.reading_errors():
        for images, labels, _, weights in source.eval_dataset(Pipeline(), batch_size, 1):
            each = [augmentation.probabilities(model.logits_of_records, images)
                    for model in models]
            for tally, probabilities in zip(members, each, strict=True):
                tally.add(labels, probabilities, weights)
            ensemble.add(labels, tf.add_n(each) / len(each), weights)
    records = manifest.splits[split].records
    check_record_count(ensemble.confusion, records, split, data_dir)
    report = report_from_confusion(ensemble.confusion, manifest.class_names, split,
                                   loss=ensemble.loss_sum / records, tta=tta)
    report["models"] = list(model_paths)
    report["trained_on"] = [model.describe() for model in models]
    if len(models) > 1:
        report["members"] = [
            {"model": path, "accuracy": float(np.trace(t.confusion) / t.confusion.sum()),
             "loss": t.loss_sum / records} for path, t in zip(model_paths, members, strict=True)]
    return report
