"""Evaluation: accuracy, per-class precision/recall/F1 and the confusion matrix of a split.

Everything is derived from one confusion matrix, the only state a distributed evaluation has
to sum over replicas. Also a CLI for any exported model (SavedModel directory or .keras):

    python -m trainer.evaluation.metrics --model JOB_DIR/export/saved_model --data_dir DATA_DIR \\
        --split test [--output DIR] [--tta]
"""

from __future__ import annotations

import json
import os
import posixpath
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from beam_preprocess.record_format import ManifestError

METRICS_FILENAME = "metrics.json"
CONFUSION_PNG_FILENAME = "confusion_matrix.png"


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


def tta_probabilities(predict_logits, images: tf.Tensor, tta: bool) -> tf.Tensor:
    """Softmax of the model's logits; with `tta`, averaged with those of the mirror image."""
    probabilities = tf.nn.softmax(tf.cast(predict_logits(images), tf.float32))
    if tta:
        mirrored = tf.nn.softmax(tf.cast(predict_logits(tf.reverse(images, axis=[2])),
                                         tf.float32))
        probabilities = (probabilities + mirrored) / 2.0
    return probabilities


def negative_log_likelihood(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    """Per-face cross-entropy of probabilities (also right for TTA-averaged ones)."""
    picked = tf.gather(probabilities, tf.cast(labels, tf.int32), axis=1, batch_dims=1)
    return -tf.math.log(tf.maximum(picked, 1e-7))


def report_from_confusion(confusion: np.ndarray, class_names: list[str], split: str,
                          loss: float | None = None, tta: bool = False) -> dict:
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
    tta = " (TTA)" if report.get("tta") else ""
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


def check_record_count(confusion: np.ndarray, expected: int, split: str, data_dir: str) -> None:
    counted = int(round(float(np.sum(confusion))))
    if counted != expected:
        raise ManifestError(f"{data_dir}: the {split} files hold {counted} readable records but "
                           f"the manifest says {expected}; the data directory is incomplete or "
                           "was changed after preprocessing.")


# --- evaluating an exported model ------------------------------------------------------------


class ExportedModel:
    """An exported model as a function: uint8 faces [N, S, S, 1] at the manifest size -> logits.

    A SavedModel written by trainer.serving.export is called through its `classify_resized` endpoint
    (its `serving_default` takes 48x48 faces); a .keras file is loaded with Keras.
    """

    def __init__(self, path: str):
        self.path = path
        self.class_names: list[str] | None = None
        self.image_size: int | None = None
        if path.rstrip("/").endswith(".keras"):
            import trainer.model  # noqa: F401  (registers the model's custom layers)

            model = keras.saving.load_model(path, compile=False)
            self.image_size = model.input_shape[1]
            self._logits = lambda images: model(tf.cast(images, tf.float32), training=False)
            return
        if not tf.io.gfile.exists(posixpath.join(path, "saved_model.pb")):
            raise FileNotFoundError(f"{path}: neither a .keras file nor a SavedModel directory")
        loaded = tf.saved_model.load(path)
        if not hasattr(loaded, "classify_resized"):
            raise ValueError(f"{path}: this SavedModel has no `classify_resized` endpoint; it was "
                             "not exported by trainer.serving.export.")
        metadata = loaded.metadata()
        self.class_names = [n.decode() for n in metadata["class_names"].numpy()]
        self.image_size = int(metadata["image_size"].numpy())
        self._loaded = loaded
        self._logits = lambda images: loaded.classify_resized(images)["logits"]

    def logits(self, images: tf.Tensor) -> tf.Tensor:
        return self._logits(images)


def evaluate_exported(model_path: str, data_dir: str, split: str = "test", tta: bool = False,
                      batch_size: int = 64) -> dict:
    """The metrics report of an exported model on a split of a preprocessed data directory."""
    from trainer.data.input_pipeline import eval_dataset, load_manifest, naming_corrupt_files

    manifest = load_manifest(data_dir)
    if split not in manifest.splits:
        raise ValueError(f"unknown split {split!r}; the manifest has {sorted(manifest.splits)}")
    model = ExportedModel(model_path)
    if model.image_size not in (None, manifest.image_size):
        raise ValueError(f"{model_path} takes {model.image_size} px faces but {data_dir} holds "
                         f"{manifest.image_size} px records.")
    if model.class_names is not None and model.class_names != manifest.class_names:
        raise ValueError(f"{model_path} was trained on classes {model.class_names}, but "
                         f"{data_dir} has {manifest.class_names}.")
    files = manifest.split_files(split, data_dir)
    stats = manifest.splits[split]
    dataset = eval_dataset(files, manifest.image_size, manifest.num_classes, stats.records,
                           batch_size, 1, None)
    confusion = np.zeros((manifest.num_classes,) * 2)
    loss_sum = 0.0
    with naming_corrupt_files(files, manifest.image_size, manifest.num_classes):
        for images, labels, weights in dataset:
            probabilities = tta_probabilities(model.logits, images, tta)
            confusion += tf.math.confusion_matrix(labels, tf.argmax(probabilities, axis=1),
                                                  manifest.num_classes, weights=weights,
                                                  dtype=tf.float64).numpy()
            loss_sum += float(tf.reduce_sum(
                negative_log_likelihood(labels, probabilities) * weights))
    check_record_count(confusion, stats.records, split, data_dir)
    report = report_from_confusion(confusion, manifest.class_names, split,
                                   loss=loss_sum / stats.records, tta=tta)
    report["model"] = model_path
    return report


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, "Exported model: SavedModel directory or .keras file.")
    flags.DEFINE_string("data_dir", None, "beam_preprocess output directory (has manifest.json).")
    flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Split to evaluate.")
    flags.DEFINE_string("output", None, "Where to write metrics.json and confusion_matrix.png "
                        "(default: print the metrics only).")
    flags.DEFINE_bool("tta", False, "Average the probabilities of each face and its mirror.")
    flags.DEFINE_integer("batch_size", 64, "Evaluation batch size.")
    flags.mark_flags_as_required(["model", "data_dir"])
    return flags.FLAGS


def _main(argv):
    from absl import flags

    from trainer.data.input_pipeline import CorruptRecordError

    del argv
    flag_values = flags.FLAGS
    try:
        report = evaluate_exported(flag_values.model, flag_values.data_dir, flag_values.split,
                                   flag_values.tta, flag_values.batch_size)
    except (ManifestError, CorruptRecordError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if flag_values.output:
        print(f"wrote {write_report(report, flag_values.output)}")
    summary = {k: report[k] for k in ("split", "records", "accuracy", "loss", "tta")}
    summary["macro_f1"] = report["macro_avg"]["f1"]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(_main)
