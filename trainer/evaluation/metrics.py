"""Evaluation metrics: accuracy, per-class precision/recall/F1 and the confusion matrix.

Everything is derived from one confusion matrix, the only state a distributed evaluation has
to sum over replicas.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from beam_preprocess.record_format import ManifestError


@keras.saving.register_keras_serializable(package="vggface_emotion")
class ConfusionMatrix(keras.metrics.Metric):
    """Sums a [true class, predicted class] count matrix; predictions are scores [N, C]."""

    def __init__(self, num_classes, name="confusion_matrix", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.counts = self.add_variable(shape=(num_classes, num_classes), initializer="zeros",
                                        dtype="float32", name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        predicted = tf.argmax(y_pred, axis=-1)
        self.counts.assign_add(tf.math.confusion_matrix(
            tf.reshape(y_true, [-1]), predicted, num_classes=self.num_classes,
            weights=sample_weight, dtype=tf.float32))

    def result(self):
        return self.counts.value

    def reset_state(self):
        self.counts.assign(tf.zeros_like(self.counts.value))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def negative_log_likelihood(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    """Per-face cross-entropy of probabilities (also right for TTA-averaged ones)."""
    picked = tf.gather(probabilities, tf.cast(labels, tf.int32), axis=1, batch_dims=1)
    return -tf.math.log(tf.maximum(picked, 1e-7))


def report_from_confusion(confusion: np.ndarray, class_names: list[str], split: str,
                          loss: float | None = None, tta: str = "none") -> dict:
    """The metrics.json content: accuracy, per-class precision/recall/F1/support, macro and
    support-weighted averages, and the matrix (rows: true class, columns: predicted)."""
    confusion = np.rint(np.asarray(confusion, dtype=np.float64)).astype(np.int64)
    total = int(confusion.sum())
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive),
                          where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive),
                       where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive),
                   where=denominator > 0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
    }
    weights = support / total if total else np.zeros_like(true_positive)
    report = {
        "split": split,
        "records": total,
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "tta": tta,
        "class_names": list(class_names),
        "per_class": per_class,
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                      "f1": float(f1.mean())},
        "weighted_avg": {"precision": float(weights @ precision),
                         "recall": float(weights @ recall), "f1": float(weights @ f1)},
        "confusion_matrix": confusion.tolist(),
    }
    if loss is not None:
        report["loss"] = float(loss)
    return report


def check_record_count(confusion: np.ndarray, expected: int, split: str, data_dir: str) -> None:
    counted = int(round(float(np.sum(confusion))))
    if counted != expected:
        raise ManifestError(f"{data_dir}: the {split} files hold {counted} readable records but "
                           f"the manifest says {expected}; the data directory is incomplete or "
                           "was changed after preprocessing.")
