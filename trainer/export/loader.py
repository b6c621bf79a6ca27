"""The one loader of exported models, for evaluation, prediction and serving alike.

Reads every export of trainer.export, chosen by the path, local or gs:// (then fetched to a
local copy with trainer.export.remote):
  - the SavedModel directory: `serving_default` takes raw 48x48 faces, `classify_records`
    takes faces as the records store them, `metadata()` names the classes and sizes;
  - model.keras (copied to a local file first: Keras reads .keras archives as local zip files)
    with labels.json beside it; raw faces become records with the function the SavedModel uses;
  - *.tflite (trainer.export.mobile; run by LiteRT, `ai_edge_litert`): signatures
    `serving_default` (raw faces -> probabilities) and `metadata`;
  - *.onnx (trainer.export.mobile; run by onnxruntime): input "faces", output "probabilities",
    class names in its metadata_props.
The TFLite and ONNX models take raw 48x48 faces only, so they score records written at 48 px
(which hold those very faces); the SavedModel and model.keras score records at their own side.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import tensorflow as tf

from beam_preprocess.record_format import SOURCE_IMAGE_SIZE
from beam_preprocess.user_error import UserError, first_line
from trainer.export.provenance import (
    PROVENANCE_KEY,
    describe,
    ensemble_provenance,
    synthetic_warning,
)
from trainer.export.remote import UnsafeObjectNameError, local_copy
from trainer.export.saved_model import LABELS_FILENAME, raw_faces_to_records


class ModelLoadError(UserError, ValueError):
    """The --model path is not an export trainer.export writes, or is unreadable."""


class ExportedModel:
    """An exported emotion model as functions of faces.

    `probabilities(faces)`: uint8 raw faces [N, 48, 48] -> float32 [N, C] (NumPy);
    `logits_of_records(images)`: uint8 [N, S, S, 1] at `records_side` -> logits; the network's
    side (`image_size`) for the SavedModel and .keras, 48 for TFLite and ONNX, which take raw
    faces. `trackable` is the object that owns the model's variables (what a converter has to
    save), None for TFLite and ONNX. `provenance`: what it was trained on
    (trainer.export.provenance; {} for exports older than that record).
    """

    def __init__(self, path: str, class_names: list[str], image_size: int, raw_fn, records_fn,
                 trackable=None, records_side: int | None = None,
                 provenance: dict | None = None):
        self.path = path
        self.provenance = provenance or {}
        self.class_names = class_names
        self.image_size = image_size
        self.records_side = image_size if records_side is None else records_side
        self.trackable = trackable
        self._raw_fn = raw_fn
        self._records_fn = records_fn

    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.asarray(self._raw_fn(tf.constant(faces, tf.uint8)), np.float32)

    def logits_of_records(self, images: tf.Tensor) -> tf.Tensor:
        return self._records_fn(tf.cast(images, tf.uint8))

    def describe(self) -> str:
        """One line: the model and what it was trained on."""
        return f"model {self.path}: {describe(self.provenance)}"

    @property
    def synthetic_warning(self) -> str | None:
        """One line when the model was trained on synthetic faces only, else None."""
        return synthetic_warning(self.provenance)


def load_exported(path: str) -> ExportedModel:
    """The exported model at `path`: a SavedModel directory, or a .keras, .tflite or .onnx
    file, local or gs:// (fetched to a local copy first: trainer.export.remote)."""
    try:
        with local_copy(path) as local:
            if local is None:
                raise ModelLoadError(f"{path}: no such file or directory")
            model = _load_local(local, path)
    except UnsafeObjectNameError as error:
        raise ModelLoadError(str(error)) from None
    except ModelLoadError:
        raise
    except (OSError, ValueError, tf.errors.OpError) as error:  # unreadable or corrupt files
        raise ModelLoadError(f"{path}: cannot be loaded ({first_line(error)})") from None
    model.path = path
    return model


def _load_local(local: str, path: str) -> ExportedModel:
    loaders = {".keras": _load_keras, ".tflite": _load_tflite, ".onnx": _load_onnx}
    extension = os.path.splitext(local.rstrip("/"))[1].lower()
    if extension in loaders:
        return loaders[extension](local)
    if os.path.isfile(os.path.join(local, "saved_model.pb")):
        return _load_saved_model(local)
    raise ModelLoadError(f"{path}: neither a .keras, .tflite or .onnx file nor a SavedModel "
                         "directory (expected JOB_DIR/model, "
                         "JOB_DIR/export/model.keras or a trainer.export_mobile output)")


def _load_saved_model(path: str) -> ExportedModel:
    loaded = tf.saved_model.load(path)
    if not all(hasattr(loaded, name) for name in ("classify_records", "metadata")) or \
            "serving_default" not in loaded.signatures:
        raise ModelLoadError(f"{path}: this SavedModel lacks the `serving_default`, "
                             "`classify_records` or `metadata` endpoint; it was not exported by "
                             "trainer.export.saved_model.")
    serve = loaded.signatures["serving_default"]
    metadata = loaded.metadata()
    class_names = [name.decode() for name in metadata["class_names"].numpy()]

    # The closures keep `loaded` alive: the endpoints' variables belong to it.
    def raw_fn(faces):
        return serve(faces=faces)["probabilities"].numpy()

    def records_fn(images):
        return loaded.classify_records(images)["logits"]

    trained_on = (json.loads(metadata[PROVENANCE_KEY].numpy().decode())
                  if PROVENANCE_KEY in metadata else {})
    return ExportedModel(path, class_names, int(metadata["image_size"].numpy()), raw_fn,
                         records_fn, trackable=loaded, provenance=trained_on)


def _load_keras(path: str) -> ExportedModel:
    import keras

    import trainer.vggface.layers  # noqa: F401  (registers the model's layers for loading)

    labels = _read_labels(path)
    model = keras.saving.load_model(path, compile=False)
    image_size = int(model.input_shape[1])

    def records_fn(images):
        return tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32)

    def raw_fn(faces):
        return tf.nn.softmax(records_fn(raw_faces_to_records(faces, image_size))).numpy()

    return ExportedModel(path, list(labels["class_names"]), image_size, raw_fn, records_fn,
                         trackable=model, provenance=labels.get(PROVENANCE_KEY))


def _load_tflite(path: str) -> ExportedModel:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ModelLoadError(f"{path}: running TFLite models needs the ai-edge-litert package "
                             f"({e}); see constraints.txt") from e
    labels = _read_labels(path)
    with open(path, "rb") as f:
        content = f.read()
    try:
        interpreter = Interpreter(model_content=content, num_threads=os.cpu_count())
        serve = interpreter.get_signature_runner("serving_default")
    except (ValueError, RuntimeError) as e:
        raise ModelLoadError(f"{path}: not a TFLite model of trainer.export.mobile "
                             f"(a serving_default signature taking faces): {e}") from e
    lock = threading.Lock()  # a LiteRT interpreter runs one call at a time

    def raw_fn(faces):
        with lock:
            return serve(faces=np.asarray(faces, np.uint8))["probabilities"].copy()

    return ExportedModel(path, list(labels["class_names"]), int(labels["image_size"]), raw_fn,
                         _raw_face_logits(raw_fn), records_side=SOURCE_IMAGE_SIZE,
                         provenance=labels.get(PROVENANCE_KEY))


def _load_onnx(path: str) -> ExportedModel:
    try:
        import onnxruntime
    except ImportError as e:
        raise ModelLoadError(f"{path}: running ONNX models needs the onnxruntime package ({e}); "
                             "see constraints.txt") from e
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types, not exported
        raise ModelLoadError(f"{path}: onnxruntime cannot load it: {e}") from e
    properties = session.get_modelmeta().custom_metadata_map
    if "class_names" not in properties:
        raise ModelLoadError(f"{path}: no class_names in its metadata; it was not exported by "
                             "trainer.export.mobile")

    def raw_fn(faces):  # InferenceSession.run is thread-safe
        return session.run(["probabilities"], {"faces": np.asarray(faces, np.uint8)})[0]

    return ExportedModel(path, json.loads(properties["class_names"]),
                         int(properties["image_size"]), raw_fn, _raw_face_logits(raw_fn),
                         records_side=SOURCE_IMAGE_SIZE,
                         provenance=json.loads(properties.get(PROVENANCE_KEY, "{}")))


def _read_labels(path: str) -> dict:
    """labels.json beside a model.keras or .tflite file: class names and the records' side."""
    labels_path = os.path.join(os.path.dirname(path), LABELS_FILENAME)
    if not os.path.isfile(labels_path):
        raise ModelLoadError(f"{LABELS_FILENAME} not found beside {path}: the exports write the "
                             f"class names of {os.path.basename(path)} there, and they are "
                             "needed to name emotions.")
    with open(labels_path) as f:
        return json.load(f)


def _raw_face_logits(raw_fn):
    """records_fn of an export that takes raw faces: 48 px records are those faces; the logits
    are the log-probabilities (their softmax gives the probabilities back)."""
    def records_fn(images):
        if images.shape[1:3] != (SOURCE_IMAGE_SIZE, SOURCE_IMAGE_SIZE):
            raise ModelLoadError(f"TFLite and ONNX exports take raw {SOURCE_IMAGE_SIZE}x"
                                 f"{SOURCE_IMAGE_SIZE} faces only, not {images.shape[1]} px "
                                 "records")
        probabilities = np.asarray(raw_fn(np.asarray(images)[..., 0]), np.float32)
        return tf.math.log(tf.maximum(probabilities, np.finfo(np.float32).tiny))

    return records_fn


def load_ensemble(paths: list[str]) -> ExportedModel:
    """Several exports as one model whose probabilities are the members' mean (an ensemble);
    one path is just that export. The members must name the same classes."""
    members = [load_exported(path) for path in paths]
    if len(members) == 1:
        return members[0]
    first = members[0]
    for member in members[1:]:
        if member.class_names != first.class_names:
            raise ModelLoadError(f"{member.path} names the classes {member.class_names}, "
                                 f"{first.path} {first.class_names}: they cannot be averaged")

    def raw_fn(faces):
        return np.mean([m.probabilities(np.asarray(faces)) for m in members], axis=0)

    def records_fn(images):
        mean = tf.add_n([tf.nn.softmax(m.logits_of_records(images)) for m in members])
        return tf.math.log(mean / len(members))  # logits whose softmax is the mean

    sizes = {m.image_size for m in members}
    sides = {m.records_side for m in members}
    return ExportedModel(" + ".join(paths), first.class_names,
                         first.image_size if len(sizes) == 1 else None, raw_fn, records_fn,
                         records_side=first.records_side if len(sides) == 1 else None,
                         provenance=ensemble_provenance(
                             [m.provenance for m in members]))
