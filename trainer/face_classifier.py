"""An exported emotion model as a function: 48x48 grey faces -> class probabilities.

Reads either export of trainer.export, local or gs://:
  - the SavedModel directory: its `serving_default` takes the raw faces and resizes them in-graph;
    `metadata()` gives the class names;
  - model.keras: faces are resized with the same function the SavedModel uses, the logits go
    through a softmax, and the class names come from labels.json beside the file.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile

import numpy as np
import tensorflow as tf

from trainer.export import LABELS_FILENAME, resize_faces


class ModelLoadError(ValueError):
    """The --model path is not an export that trainer.export writes, or cannot be read."""


class FaceClassifier:
    """`probabilities(faces)` for uint8 faces [N, 48, 48]; `class_names` names the columns."""

    def __init__(self, class_names: list[str], probabilities_fn, path: str):
        self.class_names = class_names
        self.path = path
        self._probabilities_fn = probabilities_fn

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        """float32 [N, C] for uint8 faces [N, 48, 48]; N may be 0."""
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.asarray(self._probabilities_fn(tf.constant(faces, tf.uint8)), np.float32)


def load_classifier(path: str) -> FaceClassifier:
    """The exported model at `path`: a SavedModel directory or a .keras file, local or gs://."""
    if path.rstrip("/").endswith(".keras"):
        return _load_keras(path)
    if tf.io.gfile.exists(posixpath.join(path, "saved_model.pb")):
        return _load_saved_model(path)
    raise ModelLoadError(f"{path}: neither a .keras file nor a SavedModel directory "
                         "(expected JOB_DIR/export/saved_model or JOB_DIR/export/model.keras)")


def _load_saved_model(path: str) -> FaceClassifier:
    loaded = tf.saved_model.load(path)
    if "serving_default" not in loaded.signatures or not hasattr(loaded, "metadata"):
        raise ModelLoadError(f"{path}: this SavedModel has no `serving_default` signature or "
                             "no `metadata` endpoint; it was not exported by trainer.export.")
    serve = loaded.signatures["serving_default"]
    class_names = [name.decode() for name in loaded.metadata()["class_names"].numpy()]
    # Keeps `loaded` alive: the signature's variables belong to it.
    return FaceClassifier(class_names, lambda faces: serve(faces)["probabilities"].numpy(), path)


def _load_keras(path: str) -> FaceClassifier:
    import keras

    import trainer.model  # noqa: F401  (registers the model's custom layers for loading)

    labels_path = posixpath.join(posixpath.dirname(path.rstrip("/")), LABELS_FILENAME)
    if not tf.io.gfile.exists(path):
        raise ModelLoadError(f"{path}: no such file")
    if not tf.io.gfile.exists(labels_path):
        raise ModelLoadError(f"{labels_path} not found: trainer.export writes the class names "
                             "of model.keras there, and they are needed to name the emotions.")
    with tf.io.gfile.GFile(labels_path) as f:
        labels = json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        # A local copy whatever the source: Keras reads .keras archives as local zip files.
        local = os.path.join(tmp, "model.keras")
        tf.io.gfile.copy(path, local)
        model = keras.saving.load_model(local, compile=False)
    image_size = model.input_shape[1]

    def probabilities(faces):
        logits = model(tf.cast(resize_faces(faces, image_size), tf.float32), training=False)
        return tf.nn.softmax(tf.cast(logits, tf.float32)).numpy()

    return FaceClassifier(list(labels["class_names"]), probabilities, path)
