"""The one loader of exported models, for evaluation, prediction and serving alike.

Reads either export of trainer.serving.export, local or gs://:
  - the SavedModel directory: `serving_default` takes raw 48x48 faces, `classify_records`
    takes faces as the records store them, `metadata()` names the classes and sizes;
  - model.keras (copied to a local file first: Keras reads .keras archives as local zip files)
    with labels.json beside it; raw faces become records with the function the SavedModel uses.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile

import numpy as np
import tensorflow as tf

from trainer.serving.export import LABELS_FILENAME, raw_faces_to_records


class ModelLoadError(ValueError):
    """The --model path is not an export that trainer.serving.export writes, or is unreadable."""


class ExportedModel:
    """An exported emotion model as functions of faces.

    `probabilities(faces)`: uint8 raw faces [N, 48, 48] -> float32 [N, C] (NumPy);
    `logits_of_records(images)`: uint8 [N, S, S, 1] at `image_size`, the records' side -> logits.
    """

    def __init__(self, path: str, class_names: list[str], image_size: int, raw_fn, records_fn):
        self.path = path
        self.class_names = class_names
        self.image_size = image_size
        self._raw_fn = raw_fn
        self._records_fn = records_fn

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.asarray(self._raw_fn(tf.constant(faces, tf.uint8)), np.float32)

    def logits_of_records(self, images: tf.Tensor) -> tf.Tensor:
        return self._records_fn(tf.cast(images, tf.uint8))


def load_exported(path: str) -> ExportedModel:
    """The exported model at `path`: a SavedModel directory or a .keras file, local or gs://."""
    if path.rstrip("/").endswith(".keras"):
        return _load_keras(path.rstrip("/"))
    if tf.io.gfile.exists(posixpath.join(path, "saved_model.pb")):
        return _load_saved_model(path)
    raise ModelLoadError(f"{path}: neither a .keras file nor a SavedModel directory "
                         "(expected JOB_DIR/export/saved_model or JOB_DIR/export/model.keras)")


def _load_saved_model(path: str) -> ExportedModel:
    loaded = tf.saved_model.load(path)
    if not all(hasattr(loaded, name) for name in ("classify_records", "metadata")) or \
            "serving_default" not in loaded.signatures:
        raise ModelLoadError(f"{path}: this SavedModel lacks the `serving_default`, "
                             "`classify_records` or `metadata` endpoint; it was not exported by "
                             "trainer.serving.export.")
    serve = loaded.signatures["serving_default"]
    metadata = loaded.metadata()
    class_names = [name.decode() for name in metadata["class_names"].numpy()]

    # The closures keep `loaded` alive: the endpoints' variables belong to it.
    def raw_fn(faces):
        return serve(faces=faces)["probabilities"].numpy()

    def records_fn(images):
        return loaded.classify_records(images)["logits"]

    return ExportedModel(path, class_names, int(metadata["image_size"].numpy()), raw_fn,
                         records_fn)


def _load_keras(path: str) -> ExportedModel:
    import keras

    import trainer.vggface.layers  # noqa: F401  (registers the model's layers for loading)

    labels_path = posixpath.join(posixpath.dirname(path), LABELS_FILENAME)
    if not tf.io.gfile.exists(path):
        raise ModelLoadError(f"{path}: no such file")
    if not tf.io.gfile.exists(labels_path):
        raise ModelLoadError(f"{labels_path} not found: trainer.serving.export writes the class "
                             "names of model.keras there, and they are needed to name emotions.")
    with tf.io.gfile.GFile(labels_path) as f:
        labels = json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.keras")
        tf.io.gfile.copy(path, local)
        model = keras.saving.load_model(local, compile=False)
    image_size = int(model.input_shape[1])

    def records_fn(images):
        return tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32)

    def raw_fn(faces):
        return tf.nn.softmax(records_fn(raw_faces_to_records(faces, image_size))).numpy()

    return ExportedModel(path, list(labels["class_names"]), image_size, raw_fn, records_fn)
