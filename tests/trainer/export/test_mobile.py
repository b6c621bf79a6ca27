"""TFLite and ONNX exports (trainer.export.mobile): each matches the SavedModel on faces.

Float exports must give the SavedModel's probabilities within 1e-4. The int8 model's accuracy
delta on labelled synthetic faces is printed and written to int8_check.json in the test's tmp
dir; the test asserts only what cannot flake (valid probabilities, loose agreement): the
session's model is untrained, so accuracy is at chance for every export.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from beam_preprocess.record_format import resize_faces
from tests.trainer.conftest import CLASS_NAMES, RECORDS_SIDE
from trainer.export import mobile
from trainer.export.loader import ModelLoadError, load_exported
from trainer.export.provenance import describe
from trainer.inference.photos import predict_photos

FLOAT_TOLERANCE = 1e-4


@pytest.mark.parametrize("size", [40, 56, 100, 224])
def test_portable_resize_is_bit_equal_to_the_records_resize(size):
    faces = np.random.default_rng(size).integers(0, 256, (16, 48, 48, 1), dtype=np.uint8)
    expected = resize_faces(faces, size).numpy()
    assert np.array_equal(mobile.portable_resize_faces(tf.constant(faces), size).numpy(),
                          expected)


@pytest.mark.slow
def test_portable_resize_stays_bit_equal_in_litert_and_onnxruntime(tmp_path):
    import onnxruntime
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter

    faces = np.random.default_rng(0).integers(0, 256, (32, 48, 48), dtype=np.uint8)
    expected = resize_faces(faces[..., None], 224).numpy()

    @tf.function(input_signature=[mobile.FACES_SPEC])
    def resize(faces):
        return {"records": mobile.portable_resize_faces(tf.reshape(faces, [-1, 48, 48, 1]), 224)}

    lite = tf.lite.TFLiteConverter.from_concrete_functions(
        [resize.get_concrete_function()], tf.Module()).convert()
    runner = Interpreter(model_content=lite).get_signature_runner()
    assert np.array_equal(runner(faces=faces)["records"], expected)
    proto, _ = tf2onnx.convert.from_function(resize, input_signature=[mobile.FACES_SPEC],
                                             opset=mobile.ONNX_OPSET)
    session = onnxruntime.InferenceSession(proto.SerializeToString())
    assert np.array_equal(session.run(None, {"faces": faces})[0], expected)


def _check(saved_model, path, test_faces):
    faces, labels = test_faces
    return mobile.check_export(saved_model, str(path), faces, labels)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tflite_model", "onnx_model"])
def test_float_export_gives_the_saved_models_probabilities(request, fixture, saved_model,
                                                          test_faces):
    path = request.getfixturevalue(fixture)
    check = _check(saved_model, path, test_faces)
    print(f"{path.name}: {json.dumps(check.as_dict())}")
    assert check.max_abs_diff <= FLOAT_TOLERANCE
    assert check.argmax_agreement == 1.0
    exported = load_exported(str(path))
    assert exported.class_names == CLASS_NAMES and exported.image_size == RECORDS_SIDE
    # What the model was trained on travels into its mobile exports.
    assert saved_model.provenance["dataset"] == "fer2013_synthetic"
    assert exported.provenance == saved_model.provenance
    assert exported.synthetic_warning == saved_model.synthetic_warning is not None
    assert exported.probabilities(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)


@pytest.mark.slow
def test_int8_export_is_smaller_and_mostly_agrees(saved_model, tflite_int8_model,
                                                  tflite_model, test_faces, tmp_path):
    faces, _ = test_faces
    check = _check(saved_model, tflite_int8_model, test_faces)
    expected = saved_model.probabilities(faces)
    probabilities = load_exported(str(tflite_int8_model)).probabilities(faces)
    top2 = np.argsort(probabilities, axis=1)[:, -2:]
    in_top2 = float(np.mean((top2 == expected.argmax(axis=1)[:, None]).any(axis=1)))
    delta = check.accuracy - check.source_accuracy
    record = {**check.as_dict(), "accuracy_delta": round(delta, 6),
              "mean_abs_diff": round(float(np.abs(probabilities - expected).mean()), 6),
              "float_top1_in_int8_top2": round(in_top2, 6)}
    (tmp_path / "int8_check.json").write_text(json.dumps(record, indent=2))
    print(f"int8: {json.dumps(record)}")

    assert (probabilities >= 0).all()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=0.02)  # 8-bit output steps
    # An untrained ResNet-50 quantises poorly (no redundancy in random weights; measured:
    # argmax agreement 0.57, mean |dp| 0.055, float top-1 in the int8 top-2 for 0.89), so
    # only loose bounds that still fail on a broken conversion (uniform or shuffled output).
    assert in_top2 >= 0.7 and record["mean_abs_diff"] < 0.15
    assert np.corrcoef(expected.ravel(), probabilities.ravel())[0, 1] > 0.5
    assert check.bytes < 0.35 * tflite_model.stat().st_size  # ~26 % of the float model


@pytest.mark.slow
def test_predict_takes_a_tflite_model_through_the_one_loader(saved_model, tflite_model,
                                                             tmp_path):
    import cv2

    from tests.trainer.inference.composites import hopper

    cv2.imwrite(str(tmp_path / "hopper.jpg"), hopper())
    answers = []
    for model in (saved_model, load_exported(str(tflite_model))):
        lines = []

        class Collect:
            def write(self, text, lines=lines):
                lines.extend(json.loads(t) for t in text.splitlines())

            def flush(self):
                pass

        predict_photos(model, [str(tmp_path / "hopper.jpg")], out=Collect())
        answers.append(lines)
    (from_saved, ), (from_tflite, ) = answers
    assert from_tflite["emotion"] == from_saved["emotion"]
    for name in CLASS_NAMES:
        assert from_tflite["probabilities"][name] == pytest.approx(
            from_saved["probabilities"][name], abs=2e-4)  # 4-decimal rounding of each


@pytest.mark.slow
def test_tflite_and_onnx_score_48px_records_only(tflite_model, onnx_model, test_faces):
    faces = test_faces[0][:4]
    for path in (tflite_model, onnx_model):
        model = load_exported(str(path))
        logits = model.logits_of_records(tf.constant(faces[..., None]))
        np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), model.probabilities(faces),
                                   atol=1e-6)
        with pytest.raises(ModelLoadError, match="raw 48x48 faces only, not 56 px records"):
            model.logits_of_records(tf.zeros([1, 56, 56, 1], tf.uint8))


def test_files_that_are_no_such_export_are_rejected(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"not a flatbuffer")
    (tmp_path / "labels.json").write_text(json.dumps({"class_names": CLASS_NAMES,
                                                      "image_size": 56}))
    with pytest.raises(ModelLoadError, match="not a TFLite model"):
        load_exported(str(tmp_path / "model.tflite"))
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load it"):
        load_exported(str(tmp_path / "model.onnx"))
    with pytest.raises(ModelLoadError, match="no such file"):
        load_exported(str(tmp_path / "missing.onnx"))
    (tmp_path / "labels.json").unlink()
    with pytest.raises(ModelLoadError, match="labels.json not found"):
        load_exported(str(tmp_path / "model.tflite"))


def test_labels_of_another_model_are_not_overwritten(tmp_path, saved_model):
    (tmp_path / "labels.json").write_text(json.dumps({"class_names": ["a", "b"],
                                                      "image_size": 56}))
    with pytest.raises(ValueError, match="describes another model"):
        mobile.write_labels(saved_model, str(tmp_path / "labels.json"))


def test_int8_calibration_faces_come_from_the_training_records(tmp_path):
    from tests.support.trainer_data import write_data_dir

    write_data_dir(tmp_path, {"train": [3] * 7, "test": [1] * 7}, image_size=RECORDS_SIDE)
    faces = mobile.representative_faces_from_records(str(tmp_path), count=10)
    assert faces.shape == (10, 48, 48) and faces.dtype == np.uint8 and faces.std() > 10


def _export_cli(*args):
    return subprocess.run([sys.executable, "-m", "trainer.export_mobile", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_export_command_writes_and_checks_a_tflite_model_of_model_keras(export_dir, tmp_path):
    result = _export_cli("--model", export_dir.keras, "--output", tmp_path / "mobile",
                         "--formats", "tflite", "--check_faces", "20")
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["path"] == str(tmp_path / "mobile/model.tflite") and line["faces"] == 20
    assert line["max_abs_diff"] <= FLOAT_TOLERANCE
    assert json.loads((tmp_path / "mobile/labels.json").read_text())["class_names"] == \
        CLASS_NAMES


@pytest.mark.slow
def test_export_command_with_data_dir_reports_each_exports_accuracy(export_dir, tmp_path):
    """The check the README recommends before shipping an int8 model: accuracy on the labelled
    test records, for each export and for its source."""
    from tests.support.trainer_data import write_data_dir

    write_data_dir(tmp_path / "records", {"train": [3] * 7, "test": [3] * 7},
                   image_size=RECORDS_SIDE)
    result = _export_cli("--model", export_dir.saved_model, "--output", tmp_path / "mobile",
                         "--formats", "tflite", "--int8", "--data_dir", tmp_path / "records",
                         "--calibration_faces", "20")
    assert result.returncode == 0, result.stderr[-3000:]
    float_line, int8_line = [json.loads(text) for text in result.stdout.splitlines()]
    assert int8_line["path"].endswith("model_int8.tflite") and float_line["faces"] == 21
    for line in (float_line, int8_line):
        assert 0 <= line["accuracy"] <= 1 and 0 <= line["source_accuracy"] <= 1
    assert float_line["accuracy"] == pytest.approx(float_line["source_accuracy"], abs=1 / 21)
    assert int8_line["source_accuracy"] == float_line["source_accuracy"]
    # A quiet console: no converter's multi-kilobyte INFO line, no deprecation warning.
    assert max(map(len, result.stderr.splitlines()), default=0) < 300, result.stderr[-3000:]
    assert "deprecated" not in result.stderr


def test_export_command_usage_errors_exit_2(tmp_path):
    no_data = _export_cli("--model", tmp_path, "--output", tmp_path, "--int8")
    assert no_data.returncode == 2 and "--int8 needs --data_dir" in no_data.stderr
    bad_format = _export_cli("--model", tmp_path, "--output", tmp_path, "--formats", "coreml")
    assert bad_format.returncode == 2 and "Unknown --formats coreml" in bad_format.stderr
    no_model = _export_cli("--model", tmp_path / "nothing", "--output", tmp_path)
    assert no_model.returncode == 2
    assert no_model.stderr.strip().splitlines()[-1].startswith("error: ")


def test_tflite_and_onnx_exports_are_scored_on_48px_records_as_the_saved_model_is(
        export_dir, tflite_model, tflite_int8_model, onnx_model, tmp_path):
    """The same faces at the network's side (SavedModel) and raw at 48 px (TFLite, ONNX take
    raw faces): the float exports' accuracy is the SavedModel's, int8's delta is measured."""
    from tests.support.trainer_data import balanced_counts, write_data_dir
    from trainer.evaluation.exported import evaluate_exported

    counts = {"train": balanced_counts(1), "validation": balanced_counts(1),
              "test": balanced_counts(8)}
    at_model_side, raw = tmp_path / "records_56", tmp_path / "records_48"
    write_data_dir(at_model_side, counts, image_size=RECORDS_SIDE, num_shards=1)
    write_data_dir(raw, counts, image_size=48, num_shards=1)
    reference = evaluate_exported([str(export_dir.saved_model)], str(at_model_side))
    for export in (tflite_model, onnx_model):
        report = evaluate_exported([str(export)], str(raw))
        assert report["records"] == reference["records"] == 56
        assert report["accuracy"] == reference["accuracy"], export.name
        assert report["loss"] == pytest.approx(reference["loss"], rel=1e-4)
        assert report["trained_on"] == [f"model {export}: " + describe(
            load_exported(str(export_dir.saved_model)).provenance)]
    int8 = evaluate_exported([str(tflite_int8_model)], str(raw))
    assert abs(int8["accuracy"] - reference["accuracy"]) <= 0.15
    with pytest.raises(ModelLoadError, match="take raw faces: records written with "
                       "--image_size 48"):
        evaluate_exported([str(tflite_model)], str(at_model_side))
