"""The evaluation report's files: metrics.json and a confusion-matrix picture."""

from __future__ import annotations

import json
import os
import posixpath
import tempfile

import numpy as np
import tensorflow as tf

METRICS_FILENAME = "metrics.json"
CONFUSION_PNG_FILENAME = "confusion_matrix.png"


def _write_bytes(path: str, data: bytes) -> None:
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(data)


def confusion_matrix_png(report: dict) -> bytes:
    """A heat map of the confusion matrix, coloured by row share, annotated with counts."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    counts = np.asarray(report["confusion_matrix"], dtype=np.float64)
    names = report["class_names"]
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 1.2 + 0.75 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    tta = f" (TTA {report['tta']})" if report.get("tta", "none") != "none" else ""
    ax.set_title(f"{report['split']}: accuracy {report['accuracy']:.3f}{tta}, "
                 f"n={report['records']}")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.5 else "black")
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, CONFUSION_PNG_FILENAME)
        fig.savefig(local, dpi=110)
        plt.close(fig)
        with open(local, "rb") as f:
            return f.read()


def write_report(report: dict, output_dir: str) -> str:
    """Writes metrics.json and confusion_matrix.png to `output_dir` (local or gs://)."""
    tf.io.gfile.makedirs(output_dir)
    path = posixpath.join(output_dir, METRICS_FILENAME)
    _write_bytes(path, (json.dumps(report, indent=2) + "\n").encode())
    _write_bytes(posixpath.join(output_dir, CONFUSION_PNG_FILENAME), confusion_matrix_png(report))
    return path
