"""The evaluation report: everything from one confusion matrix."""

import json

import numpy as np
import pytest
import tensorflow as tf

from trainer.evaluation.metrics import (
    ConfusionMatrix,
    negative_log_likelihood,
    report_from_confusion,
)
from trainer.evaluation.report_files import confusion_matrix_png, write_report


def test_report_derives_per_class_metrics_from_the_confusion_matrix(tmp_path):
    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    report = report_from_confusion(confusion, ["a", "b", "c"], "test", loss=0.5,
                                   tta="ten_crop")
    assert report["records"] == 14 and report["tta"] == "ten_crop"
    assert report["accuracy"] == pytest.approx(11 / 14)
    a, b = report["per_class"]["a"], report["per_class"]["b"]
    assert (a["precision"], a["recall"], a["support"]) == (pytest.approx(8 / 9), 0.8, 10)
    assert b["precision"] == pytest.approx(3 / 5) and b["recall"] == pytest.approx(0.75)
    assert b["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                        "support": 0}
    path = write_report(report, str(tmp_path / "eval"))
    with open(path) as f:
        assert json.load(f)["confusion_matrix"] == confusion.tolist()
    assert (tmp_path / "eval" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert confusion_matrix_png(report)[:4] == b"\x89PNG"


def test_confusion_matrix_metric_counts_weighted_argmax_predictions():
    metric = ConfusionMatrix(3)
    metric.update_state(tf.constant([0, 1, 2, 2]), tf.constant(
        [[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
        sample_weight=tf.constant([1.0, 1.0, 1.0, 0.0]))
    assert np.asarray(metric.result()).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]


def test_negative_log_likelihood_picks_each_faces_label():
    probabilities = tf.constant([[0.5, 0.5], [0.1, 0.9]])
    np.testing.assert_allclose(negative_log_likelihood(tf.constant([0, 1]), probabilities),
                               [-np.log(0.5), -np.log(0.9)], rtol=1e-6)
