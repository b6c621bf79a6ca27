"""Exports for serving: a SavedModel that takes raw 48x48 faces, and the Keras model.

SavedModel endpoints (keras.export.ExportArchive):
  serving_default(faces: uint8 [N,48,48] or [N,48,48,1])
      -> probabilities float32 [N,C], class_index int64 [N], class_name string [N]
      The faces become records as the Beam job makes them (record_format.resize_faces to the
      records' side), then go through the model, whose first layer is the same preprocessing
      stage training used: serving runs the operations training ran.
  serving_tta(faces) -> the same, averaged over test-time views (only when exported with TTA).
  classify_records(images: uint8 [N,S,S,1], S = the records' side) -> logits, probabilities
      (what `python -m trainer.evaluate` uses on the preprocessed records).
  metadata() -> class_names string [C], image_size int32 (the records' side),
      network_image_size int32, source_image_size int32, tta string, provenance string (JSON:
      what the model was trained on, trainer.export.provenance)
model.keras takes [N,S,S,1] faces (0..255) and returns logits; labels.json beside it holds the
class names, sizes and provenance.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile

import keras
import tensorflow as tf

from beam_preprocess.record_format import SOURCE_IMAGE_SIZE, resize_faces
from trainer.data.augmentation import TestTimeAugmentation
from trainer.export.provenance import PROVENANCE_KEY
from trainer.training.preemption import raise_if_sigterm_received
from trainer.vggface.layers import VGGFace2Preprocess

KERAS_MODEL_FILENAME = "model.keras"
LABELS_FILENAME = "labels.json"
# Beside an export while it is written / while it is being replaced.
STAGED_SUFFIX, RETIRED_SUFFIX = ".new", ".old"


def raw_faces_to_records(faces: tf.Tensor, image_size: int) -> tf.Tensor:
    """uint8 faces [N,48,48] or [N,48,48,1] -> uint8 [N,S,S,1], as the Beam job makes records
    (record_format.resize_faces, the same resize)."""
    faces = tf.convert_to_tensor(faces, tf.uint8)
    shape = tf.shape(faces)
    rank = tf.rank(faces)
    valid = (((rank == 3) | ((rank == 4) & (shape[-1] == 1)))
             & (shape[1] == SOURCE_IMAGE_SIZE) & (shape[2] == SOURCE_IMAGE_SIZE))
    message = (f"faces must be uint8 [N,{SOURCE_IMAGE_SIZE},{SOURCE_IMAGE_SIZE}] or "
               f"[N,{SOURCE_IMAGE_SIZE},{SOURCE_IMAGE_SIZE},1]")
    with tf.control_dependencies([tf.debugging.Assert(valid, [message, shape])]):
        faces = tf.reshape(faces, [-1, SOURCE_IMAGE_SIZE, SOURCE_IMAGE_SIZE, 1])
    return resize_faces(faces, image_size)


def input_size(model: keras.Model) -> int:
    """The side of the faces `model` takes: the records' side."""
    return int(model.input_shape[1])


def face_probabilities(model: keras.Model, faces: tf.Tensor) -> tf.Tensor:
    """What serving_default answers, as probabilities: raw faces -> records -> the model."""
    return tf.nn.softmax(model_logits(model, raw_faces_to_records(faces, input_size(model))))


def model_logits(model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    """float32 logits of `model` (any precision policy) on uint8 records."""
    return tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32)


def serving_archive(model: keras.Model, class_names: list[str],
                    tta: TestTimeAugmentation | None = None,
                    provenance: dict | None = None) -> keras.export.ExportArchive:
    """The ExportArchive with the endpoints described in the module docstring."""
    names = tf.constant(class_names)
    image_size = input_size(model)

    # One traced forward pass that every endpoint (and each TTA view) calls: traced once
    # instead of once per endpoint and view (ten_crop's 10 views made 10 copies of the network
    # in the graph), which made the export the slowest part of a short training job.
    @tf.function(input_signature=[
        tf.TensorSpec([None, image_size, image_size, 1], tf.uint8, name="images")])
    def logits_of(images):
        return model_logits(model, images)

    def answer(probabilities):
        index = tf.argmax(probabilities, axis=1)
        return {"probabilities": probabilities, "class_index": index,
                "class_name": tf.gather(names, index)}

    def serve(faces):
        return answer(tf.nn.softmax(logits_of(raw_faces_to_records(faces, image_size))))

    def serve_tta(faces):
        return answer(tta.probabilities(logits_of, raw_faces_to_records(faces, image_size)))

    def classify_records(images):
        logits = logits_of(images)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    def metadata():
        return {"class_names": names, "image_size": tf.constant(image_size),
                "network_image_size": tf.constant(network_size(model)),
                "source_image_size": tf.constant(SOURCE_IMAGE_SIZE),
                "tta": tf.constant(tta.mode if tta else "none"),
                PROVENANCE_KEY: tf.constant(json.dumps(provenance or {}))}

    # The endpoints track the variables they use. track(model) would add the model's Keras
    # variables as a second list that the SavedModel stores again: twice the disk (184 MB
    # instead of 92 for the ResNet-50) for nothing.
    archive = keras.export.ExportArchive()
    faces_spec = [tf.TensorSpec(None, tf.uint8, name="faces")]
    archive.add_endpoint("serving_default", serve, input_signature=faces_spec)
    if tta is not None:
        archive.add_endpoint("serving_tta", serve_tta, input_signature=faces_spec)
    archive.add_endpoint("classify_records", classify_records, input_signature=[
        tf.TensorSpec([None, image_size, image_size, 1], tf.uint8, name="images")])
    archive.add_endpoint("metadata", metadata, input_signature=[])
    return archive


def network_size(model: keras.Model) -> int:
    """The side the network runs at (its preprocessing stage resizes the input to it)."""
    stage = next(layer for layer in model.layers if isinstance(layer, VGGFace2Preprocess))
    return int(stage.compute_output_shape(model.input_shape)[1])


def export_saved_model(model: keras.Model, class_names: list[str], path: str,
                       tta: TestTimeAugmentation | None = None,
                       provenance: dict | None = None) -> None:
    """Writes the serving SavedModel to `path` (local or gs://), replacing an older one only
    once the new one is whole: a job stopped while exporting leaves the previous export."""
    path = path.rstrip("/")
    staged = path + STAGED_SUFFIX
    _finish_interrupted_swap(path)
    _remove(staged)
    serving_archive(model, class_names, tta, provenance).write_out(staged, verbose=False)
    _swap_in(staged, path)


def export_keras(model: keras.Model, class_names: list[str], export_dir: str,
                 provenance: dict | None = None) -> str:
    """Writes model.keras and labels.json to `export_dir` (local or gs://), each written
    beside its target and renamed over it when whole."""
    tf.io.gfile.makedirs(export_dir)
    target = posixpath.join(export_dir, KERAS_MODEL_FILENAME)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, KERAS_MODEL_FILENAME)
        model.save(local)
        tf.io.gfile.copy(local, target + STAGED_SUFFIX, overwrite=True)
    raise_if_sigterm_received()
    tf.io.gfile.rename(target + STAGED_SUFFIX, target, overwrite=True)
    labels = {"class_names": list(class_names), "image_size": input_size(model),
              "network_image_size": network_size(model),
              "source_image_size": SOURCE_IMAGE_SIZE, "output": "logits",
              PROVENANCE_KEY: provenance or {}}
    labels_path = posixpath.join(export_dir, LABELS_FILENAME)
    with tf.io.gfile.GFile(labels_path + STAGED_SUFFIX, "w") as f:
        f.write(json.dumps(labels, indent=2) + "\n")
    raise_if_sigterm_received()
    tf.io.gfile.rename(labels_path + STAGED_SUFFIX, labels_path, overwrite=True)
    return target


def _remove(path: str) -> None:
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path) if tf.io.gfile.isdir(path) else tf.io.gfile.remove(path)


def _swap_in(staged: str, path: str) -> None:
    """The old export steps aside, the staged one takes its name, the old one goes."""
    retired = path + RETIRED_SUFFIX
    raise_if_sigterm_received()
    _remove(retired)
    if tf.io.gfile.exists(path):
        tf.io.gfile.rename(path, retired)
    tf.io.gfile.rename(staged, path)
    _remove(retired)


def _finish_interrupted_swap(path: str) -> None:
    """A job stopped between the two renames of _swap_in left the export only as retired."""
    retired = path + RETIRED_SUFFIX
    if not tf.io.gfile.exists(path) and tf.io.gfile.exists(retired):
        tf.io.gfile.rename(retired, path)
