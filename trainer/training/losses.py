"""The training loss: cross-entropy of logits against target distributions.

Targets are one-hot labels, FER+ vote distributions, or either mixed by Mixup/CutMix. Label
smoothing mixes them with the uniform distribution; class weights weigh each face by its
target's expected class weight (its label's weight for a one-hot target).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

CLASS_WEIGHT_CHOICES = ("none", "balanced")


def class_weights(mode: str, train_counts: list[int]) -> np.ndarray:
    """Per-class loss weights. "balanced": N / (C * count_c), as scikit-learn's "balanced" (C:
    the classes that occur), so a class weighs in proportion to its rarity and the average
    weight of a training face is 1. A class without training faces gets 0 (it never appears
    as a label anyway)."""
    counts = np.asarray(train_counts, dtype=np.float64)
    if mode == "none":
        return np.ones_like(counts, dtype=np.float32)
    if mode != "balanced":
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHT_CHOICES}, got {mode!r}")
    present = np.count_nonzero(counts)
    weights = np.divide(counts.sum(), present * counts, out=np.zeros_like(counts),
                        where=counts > 0)
    return weights.astype(np.float32)


class WeightedCrossEntropy:
    """Per-face loss of (float targets [B,C], float logits [B,C])."""

    def __init__(self, label_smoothing: float, weights: np.ndarray):
        self._smoothing = label_smoothing
        self._weights = tf.constant(weights, tf.float32)

    def __call__(self, targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        targets = tf.cast(targets, tf.float32)
        num_classes = tf.cast(tf.shape(targets)[-1], tf.float32)
        smoothed = targets * (1.0 - self._smoothing) + self._smoothing / num_classes
        per_face = tf.nn.softmax_cross_entropy_with_logits(smoothed, tf.cast(logits, tf.float32))
        return per_face * tf.linalg.matvec(targets, self._weights)
