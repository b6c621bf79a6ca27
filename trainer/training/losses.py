"""The training loss: cross-entropy on logits with optional label smoothing and class weights."""

from __future__ import annotations

import keras
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
    """Per-face loss of (int labels, float logits): smoothed cross-entropy times class weight."""

    def __init__(self, num_classes: int, label_smoothing: float, weights: np.ndarray):
        self._num_classes = num_classes
        self._weights = tf.constant(weights, tf.float32)
        self._cross_entropy = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing, reduction=None)

    def __call__(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        one_hot = tf.one_hot(labels, self._num_classes, dtype=tf.float32)
        per_face = self._cross_entropy(one_hot, tf.cast(logits, tf.float32))
        return per_face * tf.gather(self._weights, labels)
