"""The loss: cross-entropy against target distributions, smoothing and class weights."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.training.losses import WeightedCrossEntropy, class_weights


def test_balanced_class_weights_follow_rarity_and_average_one_per_face():
    counts = [100, 10, 0, 50]
    weights = class_weights("balanced", counts)
    assert weights[1] == pytest.approx(10 * weights[0])
    assert weights[2] == 0.0
    assert np.dot(weights, counts) / sum(counts) == pytest.approx(1.0)
    assert class_weights("none", counts).tolist() == [1.0] * 4


def test_weighted_cross_entropy_scales_each_face_by_its_class_weight():
    logits = tf.constant([[2.0, 0.0], [2.0, 0.0]])
    targets = tf.one_hot([1, 1], 2)
    plain = WeightedCrossEntropy(0.0, np.array([1.0, 1.0]))(targets, logits).numpy()
    np.testing.assert_allclose(plain, np.log(1 + np.exp(2.0)), rtol=1e-6)
    weighted = WeightedCrossEntropy(0.0, np.array([1.0, 3.0]))(targets, logits).numpy()
    assert np.allclose(weighted, 3 * plain)
    smoothed = WeightedCrossEntropy(0.2, np.array([1.0, 1.0]))(targets, logits).numpy()
    assert np.all(smoothed < plain)


def test_soft_targets_give_the_hand_computed_cross_entropy():
    """FER+ vote distributions: the loss is -sum(p * log softmax(logits)), and a face weighs
    the expected class weight of its distribution."""
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], np.float32)
    votes = np.array([[0.7, 0.3, 0.0], [0.1, 0.1, 0.8]], np.float32)
    weights = np.array([1.0, 2.0, 4.0], np.float32)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -(votes * log_softmax).sum(axis=1) * (votes @ weights)
    got = WeightedCrossEntropy(0.0, weights)(tf.constant(votes), tf.constant(logits)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
