"""Videos and cameras: `python -m trainer.predict clip.mp4` and trainer.inference.video.

The clips are written here with cv2.VideoWriter (mp4v) from Grace Hopper's portrait: two faces
that drift a few pixels per frame. A camera cannot be tested on this machine (it has none):
only that asking for one fails cleanly.
"""

import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.trainer.conftest import CLASS_NAMES
from tests.trainer.inference import composites
from trainer.inference import video
from trainer.inference.photos import EXIT_UNREADABLE, EXIT_USAGE, PredictOptions, predict_paths

FRAMES, FPS = 8, 10.0
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def write_clip(path, frames: int = FRAMES, fps: float = FPS) -> tuple[int, int]:
    """Writes a clip of two drifting faces; returns its (width, height)."""
    pair = composites.several(angles=(0.0, 10.0)).photo
    height, width = pair.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        shift = np.float32([[1, 0, 2 * i - frames], [0, 1, i - frames / 2]])
        writer.write(cv2.warpAffine(pair, shift, (width, height), borderMode=cv2.BORDER_REPLICATE))
    writer.release()
    return width, height


class CountingModel:
    """The session's model, counting its calls and the faces per call."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.class_names = model.class_names

    def probabilities(self, faces):
        self.calls.append(len(faces))
        return self.model.probabilities(faces)


class Lines:
    def __init__(self):
        self.lines = []

    def write(self, text):
        self.lines.extend(json.loads(t) for t in text.splitlines())

    def flush(self):
        pass

    @property
    def frames(self) -> list[dict]:
        return [line for line in self.lines if "tracks" not in line]

    @property
    def tracks(self) -> list[dict]:
        [line] = [line for line in self.lines if "tracks" in line]
        return line["tracks"]


def write_still_clip(path, frames: int) -> None:
    """Grace Hopper's portrait, unmoving, `frames` times."""
    photo = composites.hopper()
    height, width = photo.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
    for _ in range(frames):
        writer.write(photo)
    writer.release()


def _frame_count(path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


@pytest.mark.slow
def test_a_clip_gives_a_line_per_frame_a_timeline_row_per_face_and_an_annotated_video(
        saved_model, tmp_path):
    width, height = write_clip(tmp_path / "clip.mp4")
    model, out = CountingModel(saved_model), Lines()
    options = PredictOptions(str(tmp_path / "out"), video.FrameOptions(batch_frames=3))
    summary = predict_paths(model, [str(tmp_path / "clip.mp4")], options, out)

    assert (summary.videos, summary.frames, summary.faces) == (1, FRAMES, 2 * FRAMES)
    assert [line["frame"] for line in out.frames] == list(range(FRAMES))
    assert [line["time"] for line in out.frames] == pytest.approx(np.arange(FRAMES) / FPS)
    assert all(line["faces"] == 2 for line in out.frames)
    # Two faces drifting together: two tracks, each seen in every frame.
    assert [[e["track"] for e in line["detections"]] for line in out.frames] == [[0, 1]] * FRAMES
    assert [(t["track"], t["frames"]) for t in out.tracks] == [(0, FRAMES), (1, FRAMES)]
    for track in out.tracks:
        assert sum(track["shares"].values()) == pytest.approx(1.0, abs=1e-5)
        assert track["emotion"] == max(track["shares"], key=track["shares"].get)
    with open(tmp_path / "out/clip.summary.json") as f:
        assert json.load(f)["tracks"] == out.tracks
    assert model.calls == [6, 6, 4]  # faces of 3 + 3 + 2 frames, one model call each
    entry = out.lines[0]["detections"][0]
    assert list(entry["probabilities"]) == CLASS_NAMES and "landmarks" in entry

    with open(tmp_path / "out/clip.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [sum(row["face"] == str(i) for row in rows) for i in (0, 1)] == [FRAMES, FRAMES]
    assert list(rows[0]) == ["frame", "time", "face", "track", "x", "y", "width", "height",
                             "emotion", "probability", *CLASS_NAMES, "smoothed_emotion",
                             "smoothed_probability"]
    with open(tmp_path / "out/clip.jsonl") as f:
        assert [json.loads(line)["frame"] for line in f] == list(range(FRAMES))
    annotated = cv2.VideoCapture(str(tmp_path / "out/clip.mp4"))
    assert (annotated.get(cv2.CAP_PROP_FRAME_WIDTH),
            annotated.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (width, height)
    annotated.release()
    assert _frame_count(tmp_path / "out/clip.mp4") == FRAMES
    assert out.frames[0]["annotated"] == str(tmp_path / "out/clip.mp4")


@pytest.mark.slow
def test_every_n_frames_reads_fewer_frames_and_keeps_their_times(saved_model, tmp_path):
    write_clip(tmp_path / "clip.mp4")
    out = Lines()
    options = PredictOptions(str(tmp_path / "out"), video.FrameOptions(every_n_frames=3))
    predict_paths(saved_model, [str(tmp_path / "clip.mp4")], options, out)

    assert [(line["frame"], line["time"]) for line in out.frames] == [
        (0, 0.0), (3, 0.3), (6, 0.6)]
    assert _frame_count(tmp_path / "out/clip.mp4") == 3
    capture = cv2.VideoCapture(str(tmp_path / "out/clip.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS / 3, abs=0.05)  # plays in time
    capture.release()


@pytest.mark.slow
def test_a_video_is_recognised_by_content_and_a_broken_one_is_reported(saved_model, tmp_path):
    write_clip(tmp_path / "recording.mp4", frames=2)
    (tmp_path / "recording.mp4").rename(tmp_path / "recording.bin")  # no video extension
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    out = Lines()
    summary = predict_paths(saved_model, [str(tmp_path / "recording.bin"),
                                          str(tmp_path / "broken.mp4")], PredictOptions(), out)

    lines = out.frames
    assert [line.get("frame") for line in lines[:2]] == [0, 1]
    assert "cannot open" in lines[2]["error"] and lines[2]["file"].endswith("broken.mp4")
    assert (summary.videos, summary.frames, summary.unreadable) == (1, 2, 1)
    assert summary.exit_code == EXIT_UNREADABLE


@pytest.mark.slow
def test_a_still_face_is_one_track_whose_smoothed_label_holds(saved_model, tmp_path):
    write_still_clip(tmp_path / "still.mp4", frames=12)
    out = Lines()
    predict_paths(saved_model, [str(tmp_path / "still.mp4")], PredictOptions(), out)
    entries = [line["detections"][0] for line in out.frames]
    assert [len(line["detections"]) for line in out.frames] == [1] * 12
    assert {entry["track"] for entry in entries} == {0}
    [track] = out.tracks
    assert (track["frames"], track["first_frame"], track["last_frame"]) == (12, 0, 11)
    assert sum(track["shares"].values()) == pytest.approx(1.0, abs=1e-5)
    smoothed = [entry["smoothed_emotion"] for entry in entries]
    assert len(set(smoothed[4:])) == 1 and track["shares"][smoothed[-1]] >= 8 / 12
    for entry in entries:  # the raw values stay beside the smoothed ones
        assert list(entry["probabilities"]) == list(entry["smoothed_probabilities"])


def test_no_camera_here_is_a_clear_error():
    with pytest.raises(video.VideoUnavailableError, match="cannot open camera 7"):
        video.open_capture(7)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "trainer.predict", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_reads_a_clip_and_fails_on_a_missing_camera_with_exit_2(export_dir, tmp_path):
    write_clip(tmp_path / "clip.mp4", frames=4)
    result = _cli("--model", export_dir.saved_model, "--output", tmp_path / "out",
                  tmp_path / "clip.mp4")
    assert result.returncode == 0, result.stderr
    *lines, tracks = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 2, 3]
    assert [track["frames"] for track in tracks["tracks"]] == [4, 4]
    assert "0 photos read, 8 faces, 0 unreadable, 1 videos (4 frames)" in result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["clip.csv", "clip.jsonl", "clip.mp4",
                                                    "clip.summary.json"]

    camera = _cli("--model", export_dir.saved_model, "--camera", "0")
    assert camera.returncode == EXIT_USAGE
    assert camera.stderr.strip().splitlines()[-1].startswith("error: cannot open camera 0")
    assert "[ WARN" not in camera.stderr  # OpenCV's tries of each backend stay quiet
