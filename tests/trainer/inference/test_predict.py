"""`python -m trainer.predict` on photos: faces found in a real photo, cropped, classified, drawn.

The photo is Grace Hopper's portrait that ships with matplotlib (a project dependency); the
model is the session's small ResNet-50 exported with trainer.export.saved_model
(tests/trainer/conftest.py), so every path from photo to JSON line is the real one. Tests that
start the CLI are marked slow. Detector-specific behaviour is in test_detection.py, videos in
test_video.py.
"""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.trainer.conftest import CLASS_NAMES
from tests.trainer.inference import composites
from tests.trainer.inference.composites import HOPPER_FACE_CENTRE
from trainer.export.loader import ModelLoadError, load_exported
from trainer.inference.annotate import BOX_COLOUR
from trainer.inference.faces.detection import DETECTOR_CHOICES, Box, crop_face, find_faces
from trainer.inference.photos import EXIT_UNREADABLE, EXIT_USAGE, annotated_path, predict_photos

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


@pytest.fixture(scope="module")
def classifier(saved_model):
    return saved_model


@pytest.fixture(scope="module")
def hopper():
    return composites.hopper()


def _run(classifier, paths, output_dir=None, detector="mtcnn"):
    lines = []

    class Collect:
        def write(self, text):
            lines.extend(json.loads(t) for t in text.splitlines())

        def flush(self):
            pass

    summary = predict_photos(classifier, [str(p) for p in paths],
                             str(output_dir) if output_dir else None, out=Collect(),
                             detector=detector)
    return summary, lines


def _centre(box):
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


@pytest.mark.slow
@pytest.mark.parametrize("detector", DETECTOR_CHOICES)
def test_finds_the_face_reads_its_emotion_and_draws_it(classifier, hopper, tmp_path, detector):
    photo = tmp_path / "hopper.jpg"
    cv2.imwrite(str(photo), hopper)
    summary, lines = _run(classifier, [photo], tmp_path / "out", detector=detector)

    assert (summary.photos, summary.faces, summary.unreadable, summary.exit_code) == (1, 1, 0, 0)
    [line] = lines
    assert line["file"] == str(photo) and line["faces"] == 1 and line["face"] == 0
    centre_x, centre_y = _centre(line["box"])
    assert abs(centre_x - HOPPER_FACE_CENTRE[0]) < 30 and abs(centre_y - HOPPER_FACE_CENTRE[1]) < 30
    assert 150 <= line["box"]["width"] <= 320
    assert ("landmarks" in line) == (detector == "mtcnn")
    probabilities = line["probabilities"]
    assert list(probabilities) == CLASS_NAMES
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert line["emotion"] == max(probabilities, key=probabilities.get)
    assert line["probability"] == probabilities[line["emotion"]]

    annotated = cv2.imread(line["annotated"])
    assert line["annotated"] == str(tmp_path / "out" / "hopper.png")
    assert annotated.shape == hopper.shape
    box = line["box"]
    bottom_edge = annotated[box["y"] + box["height"] - 1, box["x"]:box["x"] + box["width"]]
    assert (bottom_edge == BOX_COLOUR).all()


@pytest.mark.slow
def test_keras_export_gives_the_probabilities_of_the_saved_model(classifier, export_dir, hopper):
    _, faces = find_faces(hopper)
    from_keras = load_exported(str(export_dir.keras))
    assert from_keras.class_names == classifier.class_names == CLASS_NAMES
    # The .keras model runs eagerly, the SavedModel as a graph: oneDNN fuses and orders their
    # float32 sums differently (up to 1.4e-5 seen on this random, badly conditioned network).
    np.testing.assert_allclose(from_keras.probabilities(faces), classifier.probabilities(faces),
                               atol=5e-5)


@pytest.mark.slow
def test_faces_are_numbered_left_to_right(classifier, hopper, tmp_path):
    small = cv2.resize(hopper, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    # The right-hand face sits lower, so ordering by x is not ordering by y.
    pair = np.full((400, 600, 3), 255, np.uint8)
    pair[0:300, 0:256] = small
    pair[100:400, 320:576] = small
    cv2.imwrite(str(tmp_path / "pair.png"), pair)
    _, lines = _run(classifier, [tmp_path / "pair.png"])

    assert [(line["faces"], line["face"]) for line in lines] == [(2, 0), (2, 1)]
    left, right = (_centre(line["box"]) for line in lines)
    assert left[0] < 256 < 320 < right[0] and right[1] - left[1] == pytest.approx(100, abs=10)


@pytest.mark.slow
def test_a_directory_stands_for_its_photos_and_bad_files_are_reported(classifier, hopper,
                                                                      tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "grey.png"), cv2.cvtColor(hopper, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(photos / "wall.jpg"), np.full((300, 400, 3), (40, 120, 200), np.uint8))
    (photos / "broken.jpg").write_text("not a JPEG")
    cv2.imwrite(str(photos / "strip.png"), np.zeros((40000, 2), np.uint8))  # crashed detectors
    (photos / "notes.txt").write_text("not a photo, and not named like one")
    missing = tmp_path / "missing.png"
    summary, lines = _run(classifier, [photos, missing], tmp_path / "out")

    by_file = {os.path.basename(line["file"]): line for line in lines}
    assert list(by_file) == ["broken.jpg", "grey.png", "strip.png", "wall.jpg", "missing.png"]
    assert "not an image" in by_file["broken.jpg"]["error"]
    assert "2x40000" in by_file["strip.png"]["error"]
    assert "missing.png" in by_file["missing.png"]["error"]
    assert by_file["grey.png"]["faces"] == 1
    assert by_file["wall.jpg"] == {"file": str(photos / "wall.jpg"), "faces": 0,
                                   "annotated": str(tmp_path / "out" / "wall.png")}
    assert (summary.photos, summary.faces, summary.unreadable) == (2, 1, 3)
    assert summary.exit_code == EXIT_UNREADABLE
    assert sorted(os.listdir(tmp_path / "out")) == ["grey.png", "wall.png"]


@pytest.mark.parametrize("detector", DETECTOR_CHOICES)
def test_boxes_of_a_large_photo_are_in_its_own_pixels(hopper, detector):
    # 2400 x 2048: searched at DETECTION_MAX_SIDE, reported at full size.
    boxes, faces = find_faces(cv2.resize(hopper, None, fx=4, fy=4), detector=detector)
    largest = max(boxes, key=lambda box: box.width)
    centre_x, centre_y = _centre(largest.as_dict())
    assert abs(centre_x - 4 * HOPPER_FACE_CENTRE[0]) < 120
    assert abs(centre_y - 4 * HOPPER_FACE_CENTRE[1]) < 120
    assert 600 <= largest.width <= 1280 and faces.shape == (len(boxes), 48, 48)
    if detector == "mtcnn":
        assert len(boxes) == 1  # the cascade also fires once on the collar (README table)


def test_photos_with_the_same_name_get_separate_drawings():
    taken = set()
    assert [annotated_path(p, "gs://b/out", taken) for p in ("a/x.jpg", "b/x.png", "x")] == [
        "gs://b/out/x.png", "gs://b/out/x-2.png", "gs://b/out/x-3.png"]


def test_crop_grows_the_box_by_the_margin_and_repeats_edges_outside_the_photo():
    photo = np.zeros((100, 100), np.uint8)
    photo[30:70, 30:70] = 255
    box = Box(30, 30, 40, 40)
    assert (crop_face(photo, box, margin=0) == 255).all()
    grown = crop_face(photo, box, margin=0.5)  # a 80 px square: the face is its middle half
    assert grown.shape == (48, 48)
    assert (grown[14:34, 14:34] == 255).all() and (grown[:10] == 0).all()

    photo[:, 0], photo[:, 1:50] = 200, 100  # a face cut by the left border
    at_border = crop_face(photo, Box(-20, 30, 40, 40), margin=0)
    # Half the square lies left of the photo: it repeats the edge column (200), not the next.
    assert at_border.shape == (48, 48)
    assert (at_border[:, :23] == 200).all() and (at_border[:, 26:] == 100).all()


@pytest.mark.slow
def test_a_model_path_that_is_no_export_is_rejected(export_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="nor a SavedModel"):
        load_exported(str(tmp_path))
    shutil.copy(export_dir.keras, tmp_path / "model.keras")
    with pytest.raises(ModelLoadError, match="labels.json not found"):
        load_exported(str(tmp_path / "model.keras"))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "trainer.predict", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_prints_json_lines_and_exits_1_when_a_file_is_unreadable(export_dir, hopper,
                                                                     tmp_path):
    cv2.imwrite(str(tmp_path / "hopper.jpg"), hopper)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG truncated")
    result = _cli("--model", export_dir.keras, "--output", tmp_path / "out",
                  tmp_path / "hopper.jpg", tmp_path / "broken.png")

    assert result.returncode == EXIT_UNREADABLE, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [sorted(line) for line in lines] == [
        ["annotated", "box", "emotion", "face", "faces", "file", "landmarks", "probabilities",
         "probability"],
        ["error", "file"]]
    assert os.path.exists(lines[0]["annotated"])
    assert "1 photos read, 1 faces, 1 unreadable" in result.stderr
    # What the model is, before its answers: the session's model is "trained" on the demo's
    # synthetic faces, so the warning follows in one line.
    model_line, warning = result.stderr.splitlines()[:2]
    assert model_line.startswith(f"model {export_dir.keras}: trained on fer2013_synthetic ")
    assert "random weights, 56 px records, 7 classes" in model_line
    assert warning.startswith("warning: this model was trained on synthetic drawn faces only")


@pytest.mark.slow
def test_cli_usage_errors_exit_2(tmp_path):
    no_photo = _cli("--model", tmp_path)
    assert no_photo.returncode == EXIT_USAGE and "at least one photo" in no_photo.stderr
    no_model = _cli("--model", tmp_path / "nothing", tmp_path)
    assert no_model.returncode == EXIT_USAGE
    assert no_model.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nothing'}: no such file or directory"]  # one line, no TF noise
    not_an_export = _cli("--model", tmp_path, tmp_path)
    assert not_an_export.returncode == EXIT_USAGE and "nor a SavedModel" in not_an_export.stderr
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    unwritable = _cli("--model", tmp_path / "nothing", "--output", a_file / "out", tmp_path)
    assert unwritable.returncode == EXIT_USAGE
    [line] = unwritable.stderr.strip().splitlines()  # before the model is even looked at
    assert line.startswith(f"error: {a_file / 'out'}: cannot create the output directory ("), line
