"""Exports for serving: a SavedModel that takes raw 48x48 faces, and the Keras model.

SavedModel endpoints (keras.export.ExportArchive):
  serving_default(faces: uint8 [N,48,48] or [N,48,48,1])
      -> probabilities float32 [N,C], class_index int64 [N], class_name string [N]
      The faces are resized in-graph like the preprocessing job (bilinear, half-pixel centres,
      rounded to uint8) to the training size, then preprocessed by the model itself.
  classify_resized(images: uint8 [N,S,S,1], S = the training size) -> logits, probabilities
      (what `python -m trainer.evaluate` uses on the preprocessed records).
  metadata() -> class_names string [C], image_size int32, source_image_size int32
model.keras takes [N,S,S,1] faces (0..255) and returns logits; labels.json beside it holds the
class names and sizes.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile

import keras
import tensorflow as tf

from beam_preprocess.record_format import SOURCE_IMAGE_SIZE

SAVED_MODEL_NAME = "saved_model"
KERAS_MODEL_FILENAME = "model.keras"
LABELS_FILENAME = "labels.json"


def resize_faces(faces: tf.Tensor, image_size: int) -> tf.Tensor:
    """uint8 faces [N,48,48] or [N,48,48,1] -> uint8 [N,S,S,1], resized as the Beam job does."""
    faces = tf.convert_to_tensor(faces, tf.uint8)
    shape = tf.shape(faces)
    rank = tf.rank(faces)
    valid = (((rank == 3) | ((rank == 4) & (shape[-1] == 1)))
             & (shape[1] == SOURCE_IMAGE_SIZE) & (shape[2] == SOURCE_IMAGE_SIZE))
    message = (f"faces must be uint8 [N,{SOURCE_IMAGE_SIZE},{SOURCE_IMAGE_SIZE}] or "
               f"[N,{SOURCE_IMAGE_SIZE},{SOURCE_IMAGE_SIZE},1]")
    with tf.control_dependencies([tf.debugging.Assert(valid, [message, shape])]):
        faces = tf.reshape(faces, [-1, SOURCE_IMAGE_SIZE, SOURCE_IMAGE_SIZE, 1])
    if image_size == SOURCE_IMAGE_SIZE:
        return faces
    resized = tf.image.resize(tf.cast(faces, tf.float32), [image_size, image_size],
                              method="bilinear", antialias=False)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def serving_archive(model: keras.Model, class_names: list[str],
                    image_size: int) -> keras.export.ExportArchive:
    """The ExportArchive with the endpoints described in the module docstring."""
    names = tf.constant(class_names)

    def predict(images):
        logits = tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32)
        return logits, tf.nn.softmax(logits)

    def serve(faces):
        _, probabilities = predict(resize_faces(faces, image_size))
        index = tf.argmax(probabilities, axis=1)
        return {"probabilities": probabilities, "class_index": index,
                "class_name": tf.gather(names, index)}

    def classify_resized(images):
        logits, probabilities = predict(images)
        return {"logits": logits, "probabilities": probabilities}

    def metadata():
        return {"class_names": names, "image_size": tf.constant(image_size),
                "source_image_size": tf.constant(SOURCE_IMAGE_SIZE)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve,
                         input_signature=[tf.TensorSpec(None, tf.uint8, name="faces")])
    archive.add_endpoint("classify_resized", classify_resized, input_signature=[
        tf.TensorSpec([None, image_size, image_size, 1], tf.uint8, name="images")])
    archive.add_endpoint("metadata", metadata, input_signature=[])
    return archive


def export_saved_model(model: keras.Model, class_names: list[str], image_size: int,
                       path: str) -> None:
    """Writes the serving SavedModel to `path` (local or gs://), replacing an older one."""
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)
    serving_archive(model, class_names, image_size).write_out(path, verbose=False)


def export_keras(model: keras.Model, class_names: list[str], image_size: int,
                 export_dir: str) -> str:
    """Writes model.keras and labels.json to `export_dir` (local or gs://)."""
    tf.io.gfile.makedirs(export_dir)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, KERAS_MODEL_FILENAME)
        model.save(local)
        target = posixpath.join(export_dir, KERAS_MODEL_FILENAME)
        tf.io.gfile.copy(local, target, overwrite=True)
    labels = {"class_names": list(class_names), "image_size": image_size,
              "source_image_size": SOURCE_IMAGE_SIZE, "output": "logits"}
    with tf.io.gfile.GFile(posixpath.join(export_dir, LABELS_FILENAME), "w") as f:
        f.write(json.dumps(labels, indent=2) + "\n")
    return target
