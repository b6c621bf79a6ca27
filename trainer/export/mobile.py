"""Exports for phones, browsers and other runtimes: TFLite (LiteRT) and ONNX.

Both take what the SavedModel's `serving_default` takes, raw faces uint8 [N, 48, 48], and return
`probabilities` float32 [N, C]. The ONNX model carries the class names and the records' side in
its metadata_props ("class_names" as JSON, "image_size"); a TFLite model has them in labels.json
beside it, as model.keras does (the int8 calibrator rejects a second, input-less signature).

The faces are resized to the records' side by `portable_resize_faces`, the same arithmetic as
record_format.resize_faces written as gathers and lerps: the converters' own resize ops differ
(TFLite's bilinear kernel is up to 8e-4 grey levels off, which flips the rounding of ~0.3 % of
pixels; tf2onnx 1.17 turns a 48 -> 56 or 48 -> 224 resize into an ONNX Resize with a float scale
that gives 55 or 223 rows). Gathers and lerps convert one to one, and the result is bit-equal to
TF's kernel in TF, LiteRT and onnxruntime (tests/trainer/export).

Every export is checked against its source on faces right after writing (`check_export`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import posixpath
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from beam_preprocess.record_format import SOURCE_IMAGE_SIZE
from beam_preprocess.user_error import UserError, first_line
from trainer.export.loader import ExportedModel, load_exported
from trainer.export.provenance import PROVENANCE_KEY
from trainer.export.saved_model import LABELS_FILENAME


class MobileExportError(UserError, ValueError):
    """A TFLite or ONNX export that cannot be made or written where asked."""


FACES_SPEC = tf.TensorSpec([None, SOURCE_IMAGE_SIZE, SOURCE_IMAGE_SIZE], tf.uint8, name="faces")
SERVING_SIGNATURE = "serving_default"
ONNX_OPSET = 17
TFLITE_FILENAME, TFLITE_INT8_FILENAME, ONNX_FILENAME = "model.tflite", "model_int8.tflite", \
    "model.onnx"


def portable_resize_faces(faces: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [N, H, H, 1] -> uint8 [N, size, size, 1], bit-equal to record_format.resize_faces.

    TF's bilinear kernel (half-pixel centres): source coordinate (i + 0.5) * (H / size) - 0.5 in
    float32, rows and columns floor/ceil-clamped, top = tl + (tr - tl) * x_lerp, likewise the
    bottom, out = top + (bottom - top) * y_lerp; then rounded (half to even) and clipped.
    """
    side = int(faces.shape[1])
    if side == size:
        return tf.cast(faces, tf.uint8)
    lower, upper, lerp = _interpolation(side, size)
    pixels = tf.cast(faces, tf.float32)
    top_rows, bottom_rows = tf.gather(pixels, lower, axis=1), tf.gather(pixels, upper, axis=1)
    x_lerp = tf.constant(lerp.reshape(1, 1, size, 1))
    y_lerp = tf.constant(lerp.reshape(1, size, 1, 1))

    def across(rows):
        left, right = tf.gather(rows, lower, axis=2), tf.gather(rows, upper, axis=2)
        return left + (right - left) * x_lerp

    top, bottom = across(top_rows), across(bottom_rows)
    resized = top + (bottom - top) * y_lerp
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _interpolation(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF's CachedInterpolation for one axis, in float32 as its kernel computes it."""
    scale = np.float32(in_size) / np.float32(out_size)
    source = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(source)
    lower = np.maximum(floor, 0).astype(np.int32)
    upper = np.minimum(np.ceil(source), in_size - 1).astype(np.int32)
    return lower, upper, (source - floor).astype(np.float32)


def serving_function(model: ExportedModel):
    """The tf.function raw faces uint8 [N, 48, 48] -> {"probabilities"}; its name is the
    TFLite signature key."""
    image_size = int(model.image_size)

    @tf.function(input_signature=[FACES_SPEC])
    def serving_default(faces):
        records = portable_resize_faces(
            tf.reshape(faces, [-1, SOURCE_IMAGE_SIZE, SOURCE_IMAGE_SIZE, 1]), image_size)
        logits = tf.cast(model.logits_of_records(records), tf.float32)
        return {"probabilities": tf.nn.softmax(logits)}

    return serving_default


@dataclasses.dataclass
class ExportCheck:
    """How an export's probabilities compare with its source's on `faces` faces."""

    path: str
    bytes: int
    faces: int
    max_abs_diff: float
    argmax_agreement: float
    accuracy: float | None = None
    source_accuracy: float | None = None

    def as_dict(self) -> dict:
        return {key: (round(value, 6) if isinstance(value, float) else value)
                for key, value in dataclasses.asdict(self).items()}


def as_exported(source: ExportedModel | str) -> ExportedModel:
    """An ExportedModel from itself or from a SavedModel directory / .keras path."""
    return source if isinstance(source, ExportedModel) else load_exported(source)


def export_tflite(source: ExportedModel | str, path: str,
                  representative_faces: np.ndarray | None = None) -> str:
    """Writes a TFLite model of `source` (an ExportedModel, a SavedModel dir or a .keras file) to
    `path` (local or gs://). With `representative_faces` (uint8 [N, 48, 48], a few hundred
    faces like the ones it will see) weights and activations are quantised to int8 (inputs stay
    uint8 faces, outputs float32 probabilities); without, it stays float32."""
    with _as_saved_model(as_exported(source)) as model:
        _convert_tflite(model, path, representative_faces)
    return path


def _convert_tflite(model: ExportedModel, path: str, representative_faces) -> None:
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serving_function(model).get_concrete_function()], model.trackable)
    if representative_faces is not None:
        if len(representative_faces) == 0:
            raise MobileExportError("int8 quantisation needs at least one representative face")
        faces = np.asarray(representative_faces, np.uint8)

        def representative_dataset():
            for face in faces:
                yield SERVING_SIGNATURE, {"faces": face[None]}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
    with warnings.catch_warnings():
        # TF's int8 calibrator runs the deprecated tf.lite.Interpreter inside the converter,
        # which warns about it; this project runs its TFLite models with LiteRT already.
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is "
                                "deprecated", category=UserWarning)
        flatbuffer = converter.convert()
    _write_bytes(flatbuffer, path)
    write_labels(model, posixpath.join(posixpath.dirname(path), LABELS_FILENAME))


@contextlib.contextmanager
def _as_saved_model(model: ExportedModel):
    """`model` itself when it is a loaded SavedModel, else (model.keras) the same model written
    by trainer.export.saved_model.export_saved_model to a temporary directory and loaded back.

    The converters need the variables' owner to be a trackable they can save: a Keras 3 model
    handed over bare converts to a TFLite model without signatures, or with garbage weights.
    """
    import keras

    if not isinstance(model.trackable, keras.Model):
        yield model
        return
    from trainer.export.saved_model import export_saved_model

    with tempfile.TemporaryDirectory() as tmp:
        directory = os.path.join(tmp, "saved_model")
        export_saved_model(model.trackable, model.class_names, directory,
                           provenance=model.provenance)
        yield load_exported(directory)


def write_labels(model: ExportedModel, path: str) -> None:
    """labels.json (class_names, image_size) for a TFLite model. One already there, e.g. the
    export directory's own beside model.keras, is kept when it names the same classes and side,
    and is an error otherwise: it belongs to another model."""
    labels = {"class_names": list(model.class_names), "image_size": int(model.image_size),
              "source_image_size": SOURCE_IMAGE_SIZE, PROVENANCE_KEY: model.provenance}
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            present = json.load(f)
        if [present.get(key) for key in ("class_names", "image_size")] != \
                [labels["class_names"], labels["image_size"]]:
            raise MobileExportError(
                f"{path} describes another model (classes {present.get('class_names')}, side "
                f"{present.get('image_size')}); write the TFLite model to another directory")
        return
    _write_bytes((json.dumps(labels, indent=2) + "\n").encode(), path)


def export_onnx(source: ExportedModel | str, path: str, opset: int = ONNX_OPSET) -> str:
    """Writes an ONNX model of `source` to `path` (local or gs://) with tf2onnx; input "faces"
    uint8 [N, 48, 48], output "probabilities", class names in its metadata_props."""
    import onnx
    import tf2onnx

    with _as_saved_model(as_exported(source)) as model:
        proto, _ = tf2onnx.convert.from_function(serving_function(model),
                                                 input_signature=[FACES_SPEC], opset=opset)
    onnx.helper.set_model_props(proto, {"class_names": json.dumps(model.class_names),
                                        "image_size": str(model.image_size),
                                        "producer": "trainer.export.mobile",
                                        PROVENANCE_KEY: json.dumps(model.provenance)})
    _write_bytes(proto.SerializeToString(), path)
    return path


def check_export(source: ExportedModel | str, path: str, faces: np.ndarray,
                 labels: np.ndarray | None = None) -> ExportCheck:
    """Loads the export at `path` through the one loader and compares it with `source` on
    `faces` (uint8 [N, 48, 48]); with `labels`, the accuracy of both too."""
    reference = as_exported(source)
    exported = load_exported(path)
    if exported.class_names != reference.class_names:
        raise MobileExportError(f"{path}: class names {exported.class_names} differ from the "
                                f"source's {reference.class_names}")
    expected, actual = reference.probabilities(faces), exported.probabilities(faces)
    check = ExportCheck(path, int(tf.io.gfile.stat(path).length), len(faces),
                        float(np.abs(actual - expected).max()) if len(faces) else 0.0,
                        float(np.mean(actual.argmax(1) == expected.argmax(1))))
    if labels is not None:
        check.accuracy = float(np.mean(actual.argmax(1) == labels))
        check.source_accuracy = float(np.mean(expected.argmax(1) == labels))
    return check


def representative_faces_from_records(data_dir: str, count: int = 200,
                                      split: str = "train") -> np.ndarray:
    """uint8 [count, 48, 48] faces for int8 calibration, from a beam_preprocess output."""
    return labelled_faces_from_records(data_dir, count, split)[0]


def labelled_faces_from_records(data_dir: str, count: int = 200,
                                split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(uint8 faces [n, 48, 48], int labels [n]) of up to `count` records of a split.

    Records hold faces at the records' side S (48 -> S by resize_faces); an area resize back to
    48 is close enough for calibration and accuracy checks (at S = 48 it is the face itself).
    """
    import cv2

    from beam_preprocess.record_format import IMAGE_KEY, LABEL_KEY, parse_example, read_manifest

    manifest = read_manifest(data_dir)
    files = manifest.split_files(split, data_dir)
    dataset = tf.data.TFRecordDataset(files).take(count).map(
        lambda record: parse_example(record, manifest.image_size))
    faces, labels = [], []
    for example in dataset:
        faces.append(cv2.resize(example[IMAGE_KEY].numpy()[..., 0],
                                (SOURCE_IMAGE_SIZE, SOURCE_IMAGE_SIZE),
                                interpolation=cv2.INTER_AREA))
        labels.append(int(example[LABEL_KEY]))
    if not faces:
        raise MobileExportError(f"{data_dir}: the {split} split has no records")
    return np.stack(faces), np.array(labels)


def _write_bytes(data: bytes, path: str) -> None:
    """Writes `data` to `path`, local or gs://, through a local file copied into place."""
    directory = posixpath.dirname(path)
    try:
        if directory:
            tf.io.gfile.makedirs(directory)
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, posixpath.basename(path))
            with open(local, "wb") as f:
                f.write(data)
            tf.io.gfile.copy(local, path, overwrite=True)
    except (OSError, tf.errors.OpError) as error:
        raise MobileExportError(f"{path}: cannot write it ({first_line(error)})") from None
