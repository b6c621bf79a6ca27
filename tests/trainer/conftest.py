"""One small exported emotion model per test session, for every test that needs an export.

The model is the project's ResNet-50 (trainer.model.build_emotion_model) at 56 px with random
weights: big enough to run every real code path, small enough to build in seconds. It takes
records of side 56, so every export resizes raw 48x48 faces as production exports do (48 ->
224 there). Its BatchNorm statistics are set from one batch of synthetic faces, as training
would leave them: with the initial statistics (mean 0, variance 1) a random ResNet-50 is badly
conditioned and float32 rounding alone moves its probabilities by ~1e-3. Calibrated, its
logits span about +-5 and differ from face to face: a fair test of export parity.

It is not trained: a head fitted for a few epochs on these random features collapses to the
same answer for every face (its ReLUs die), and learning the synthetic expressions needs
pretrained weights or minutes of full training. The TFLite and ONNX exports are built only
when a test asks for them (~15-30 s each).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from beam_preprocess.record_format import FER2013_CLASS_NAMES

CLASS_NAMES = list(FER2013_CLASS_NAMES)
RECORDS_SIDE = 56
TEST_FACES_SEED = 1


def synthetic_faces(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(faces uint8 [count, 48, 48], labels) drawn by beam_preprocess.synthetic, classes cycling."""
    from beam_preprocess.synthetic import draw_face

    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(CLASS_NAMES)
    return np.stack([draw_face(int(label), rng) for label in labels]), labels


def _calibrate_batch_norm(model, records) -> None:
    """Sets every BatchNorm layer's moving statistics to those of `records` (one pass)."""
    import tensorflow as tf

    from trainer.vggface.layers import SwitchableBatchNormalization

    layers = [layer for layer in model.layers if isinstance(layer, SwitchableBatchNormalization)]
    saved = [(layer.trainable, layer.use_batch_statistics, layer.momentum) for layer in layers]
    for layer in layers:
        layer.trainable, layer.use_batch_statistics, layer.momentum = True, True, 0.0
    model(tf.cast(records, tf.float32), training=True)
    for layer, (trainable, batch_statistics, momentum) in zip(layers, saved, strict=True):
        layer.trainable, layer.use_batch_statistics, layer.momentum = (
            trainable, batch_statistics, momentum)


@dataclasses.dataclass(frozen=True)
class ExportDir:
    """JOB_DIR/export of the session's model: saved_model/, model.keras and labels.json."""

    path: Path

    @property
    def saved_model(self) -> Path:
        return self.path / "saved_model"

    @property
    def keras(self) -> Path:
        return self.path / "model.keras"


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> ExportDir:
    import keras

    from trainer.export.saved_model import export_keras, export_saved_model, raw_faces_to_records
    from trainer.model import build_emotion_model

    faces, _ = synthetic_faces(56, seed=0)
    keras.utils.set_random_seed(0)  # the same weights every session: the same parity figures
    model = build_emotion_model(len(CLASS_NAMES), image_size=RECORDS_SIDE,
                                input_size=RECORDS_SIDE, weights=None, trainable_from="none",
                                dense_units=16)
    _calibrate_batch_norm(model, raw_faces_to_records(faces, RECORDS_SIDE))
    directory = tmp_path_factory.mktemp("job") / "export"
    trained_on = session_provenance()
    export_saved_model(model, CLASS_NAMES, str(directory / "saved_model"), provenance=trained_on)
    export_keras(model, CLASS_NAMES, str(directory), provenance=trained_on)
    return ExportDir(directory)


def session_provenance() -> dict:
    """What the session's model records as its training: the demo's synthetic data set."""
    from beam_preprocess.record_format import Manifest
    from trainer.config import TrainConfig
    from trainer.export.provenance import training_provenance

    manifest = Manifest(image_size=RECORDS_SIDE, label_set="fer2013", class_names=CLASS_NAMES,
                        splits={}, bad_rows=0, input_path="demo/fer2013_synthetic.csv")
    config = TrainConfig.of(data_dir="records", job_dir="job", weights=None, dense_units=16,
                            trainable_from="none")
    return training_provenance(config, manifest, manifest.to_json().encode(), RECORDS_SIDE)


@pytest.fixture(scope="session")
def saved_model(export_dir):
    """The session's SavedModel through the one loader (trainer.export.loader)."""
    from trainer.export.loader import load_exported

    return load_exported(str(export_dir.saved_model))


@pytest.fixture(scope="session")
def test_faces() -> tuple[np.ndarray, np.ndarray]:
    """70 labelled synthetic faces the model never saw (10 per class)."""
    return synthetic_faces(70, seed=TEST_FACES_SEED)


@pytest.fixture(scope="session")
def tflite_model(export_dir, saved_model) -> Path:
    from trainer.export.mobile import TFLITE_FILENAME, export_tflite

    return Path(export_tflite(saved_model, str(export_dir.path / TFLITE_FILENAME)))


@pytest.fixture(scope="session")
def tflite_int8_model(export_dir, saved_model) -> Path:
    from trainer.export.mobile import TFLITE_INT8_FILENAME, export_tflite

    representative, _ = synthetic_faces(64, seed=2)
    return Path(export_tflite(saved_model, str(export_dir.path / TFLITE_INT8_FILENAME),
                              representative_faces=representative))


@pytest.fixture(scope="session")
def onnx_model(export_dir, saved_model) -> Path:
    from trainer.export.mobile import ONNX_FILENAME, export_onnx

    return Path(export_onnx(saved_model, str(export_dir.path / ONNX_FILENAME)))
