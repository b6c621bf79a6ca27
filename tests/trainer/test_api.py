"""trainer.api, the Python API: the examples of docs/predict.md run as written, and every
kind of input gives the numbers `trainer.predict` prints for the same photo."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.support.trainer_data import REPO_ROOT
from tests.trainer.inference import composites
from trainer.api import EmotionReader
from trainer.inference.files import UnreadablePhotoError
from trainer.inference.photos import predict_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = {"photo.jpg": folder / "photo.jpg", "several.png": folder / "several.png"}
    cv2.imwrite(str(paths["photo.jpg"]), composites.hopper())
    cv2.imwrite(str(paths["several.png"]), composites.several().photo)
    return paths


@pytest.fixture(scope="module")
def reader(export_dir) -> EmotionReader:
    with pytest.warns(UserWarning, match="trained on synthetic drawn faces only"):
        return EmotionReader(export_dir.saved_model)


def test_the_reader_says_what_its_model_was_trained_on(reader):
    assert reader.provenance["dataset"] == "fer2013_synthetic"
    assert reader.provenance["class_names"] == reader.class_names


def predict_command_rows(saved_model, path: Path) -> list[dict]:
    """The probabilities of each face as `trainer.predict` prints them."""
    lines = []

    class Collect:
        def write(self, text):
            lines.extend(json.loads(t) for t in text.splitlines())

        def flush(self):
            pass

    predict_photos(saved_model, [str(path)], out=Collect())
    return [line["probabilities"] for line in lines if "probabilities" in line]


def assert_same(faces, rows, atol=1e-6):
    assert len(faces) == len(rows) > 0
    for face, row in zip(faces, rows, strict=True):
        assert list(face.probabilities) == list(row)
        np.testing.assert_allclose(list(face.probabilities.values()), list(row.values()),
                                   atol=atol, rtol=0)


@contextlib.contextmanager
def serving(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def readme_api_blocks() -> list[str]:
    page = (REPO_ROOT / "docs/predict.md").read_text()
    section = page[page.index("## From Python: `trainer.api`"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_docs_examples_run_as_written(export_dir, photos, tmp_path, monkeypatch, capsys):
    (tmp_path / "demo_output/job").mkdir(parents=True)
    (tmp_path / "demo_output/job/model").symlink_to(export_dir.saved_model)
    (tmp_path / "photo.jpg").symlink_to(photos["photo.jpg"])
    monkeypatch.chdir(tmp_path)
    blocks = readme_api_blocks()
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/predict.md", "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out.splitlines()
    emotion = namespace["faces_per_image"][0][0].emotion
    assert printed[0].startswith(f"{emotion} ") and "Box(x=" in printed[0]
    assert printed[1] == str([[emotion], [emotion]])
    assert "'landmarks': {'left_eye'" in printed[2]


def test_a_path_an_array_and_a_pil_image_give_the_predict_commands_numbers(
        reader, saved_model, photos):
    rows = predict_command_rows(saved_model, photos["photo.jpg"])
    assert_same(reader.read(photos["photo.jpg"]), rows)
    assert_same(reader.read(str(photos["photo.jpg"])), rows)
    assert_same(reader.read(cv2.imread(str(photos["photo.jpg"]))), rows)
    assert_same(reader.read(Image.open(photos["photo.jpg"])), rows)
    [face] = reader.read(photos["photo.jpg"])
    assert face.landmarks is not None and set(face.as_dict()) == {
        "box", "emotion", "probability", "probabilities", "landmarks"}
    assert face.probability == max(face.probabilities.values())


def test_a_batch_gives_each_images_faces_left_to_right(reader, saved_model, photos):
    several, hopper = reader.read_batch([photos["several.png"], photos["photo.jpg"]])
    # One call over 4 faces where the command makes one per photo (3, then 1): float32 kernels
    # blocked for another batch size round differently (measured: 1.6e-6 with oneDNN's AVX-512
    # kernels, 1.2e-5 with its AVX2 ones, ONEDNN_MAX_CPU_ISA=AVX2). Two different faces
    # differ by 0.05 and more.
    assert_same(several, predict_command_rows(saved_model, photos["several.png"]), atol=5e-5)
    assert_same(hopper, predict_command_rows(saved_model, photos["photo.jpg"]), atol=5e-5)
    assert len(several) == 3 and [f.box.x for f in several] == sorted(f.box.x for f in several)
    assert reader.read_batch([]) == []
    assert reader.read(np.full((200, 300, 3), 90, np.uint8)) == []  # a wall: no face


def test_an_http_url_is_fetched_and_read(reader, saved_model, photos):
    with serving(photos["photo.jpg"].parent) as base:
        assert_same(reader.read(f"{base}/photo.jpg"),
                    predict_command_rows(saved_model, photos["photo.jpg"]))
        with pytest.raises(UnreadablePhotoError, match=r"missing\.jpg: cannot fetch .*404"):
            reader.read(f"{base}/missing.jpg")


def test_a_list_of_exports_is_an_ensemble(export_dir, reader, photos):
    keras_reader = EmotionReader(export_dir.keras)
    ensemble = EmotionReader([export_dir.saved_model, export_dir.keras])
    [one], [other], [mean] = (r.read(photos["photo.jpg"])
                              for r in (reader, keras_reader, ensemble))
    for name in one.probabilities:
        assert mean.probabilities[name] == pytest.approx(
            (one.probabilities[name] + other.probabilities[name]) / 2, abs=1e-6)


@pytest.mark.parametrize("image, error, message", [
    (np.zeros((10, 10, 3), np.float32), ValueError, "must be uint8"),
    (np.zeros((10, 10, 2), np.uint8), ValueError, r"got shape \(10, 10, 2\)"),
    (42, TypeError, "not int"),
])
def test_what_is_not_an_image_is_named(reader, image, error, message):
    with pytest.raises(error, match=message):
        reader.read(image)
