"""Emotions along a video or a camera feed: frames in, per-frame JSON, a CSV timeline and an
annotated MP4 out.

Any file OpenCV's FFmpeg backend reads works (cv2.VideoCapture); a camera is a device index.
Every `every_n_frames`-th frame is read, its faces found and cropped, and the faces of
`batch_frames` frames go through the model in one call (one call per frame would spend most of
the time in per-call overhead). Outputs, with an output directory:
  <name>.jsonl  one line per frame read: frame, time (s), faces, detections [...];
  <name>.csv    the timeline: one row per face per frame (frames without a face have none);
  <name>.mp4    the frames read, faces boxed and labelled (mp4v), at fps / every_n_frames,
                so that it plays at the source's speed.
The per-frame lines also go to the caller's stream (stdout for the CLI).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import posixpath
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TextIO

import cv2
import numpy as np
import tensorflow as tf

from beam_preprocess.user_error import UserError
from trainer.inference import tracking
from trainer.inference.annotate import draw_faces, label_text
from trainer.inference.emotion_fields import emotion_fields
from trainer.inference.face_entry import face_entry
from trainer.inference.faces import detection

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
DEFAULT_BATCH_FRAMES = 8
_FALLBACK_FPS = 25.0
_FOURCC = "mp4v"


class VideoUnavailableError(UserError, ValueError):
    """A video file or camera that OpenCV cannot open or read a frame from."""


@dataclasses.dataclass
class FrameOptions:
    every_n_frames: int = 1
    batch_frames: int = DEFAULT_BATCH_FRAMES
    max_frames: int | None = None  # frames read (after every_n_frames); None: to the end
    margin: float = detection.DEFAULT_MARGIN
    min_face_size: int = detection.DEFAULT_MIN_FACE_SIZE
    detector: str = detection.DEFAULT_DETECTOR
    smooth_frames: int = tracking.DEFAULT_WINDOW  # videos: frames a face's probabilities average


@dataclasses.dataclass
class VideoSummary:
    frames: int = 0
    faces: int = 0
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    tracks: list[dict] = dataclasses.field(default_factory=list)  # FaceTracker.summary()


def is_video_path(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def can_open_as_video(path: str) -> bool:
    """Whether OpenCV reads at least one frame of the local file `path`."""
    capture = cv2.VideoCapture(path)
    try:
        return capture.isOpened() and capture.read()[0]
    finally:
        capture.release()


def open_capture(source: str | int) -> cv2.VideoCapture:
    """cv2.VideoCapture of a local file or a camera index; VideoUnavailableError if it fails."""
    # OpenCV logs a [ WARN ] line per backend it tried before giving up; the one error below
    # says what the user needs to know.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        capture = cv2.VideoCapture(source)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not capture.isOpened():
        capture.release()
        what = f"camera {source}" if isinstance(source, int) else source
        hint = (" (no camera is attached, or it is busy or not permitted)"
                if isinstance(source, int) else " (not a video OpenCV's FFmpeg can read)")
        raise VideoUnavailableError(f"cannot open {what}{hint}")
    return capture


def frames(capture: cv2.VideoCapture, every_n_frames: int = 1, max_frames: int | None = None,
           live: bool = False) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, time in seconds, BGR frame) of every n-th frame.

    Times come from the frame rate (index / fps) for files, from the clock for live cameras.
    """
    if every_n_frames < 1:
        raise ValueError(f"every_n_frames must be >= 1, got {every_n_frames}")
    fps = capture.get(cv2.CAP_PROP_FPS) or _FALLBACK_FPS
    start, index, read = time.monotonic(), -1, 0
    while max_frames is None or read < max_frames:
        ok, frame = capture.read()
        if not ok:
            return
        index += 1
        if index % every_n_frames:
            continue
        read += 1
        yield index, (time.monotonic() - start) if live else index / fps, frame


def frame_line(name: str, index: int, seconds: float, faces: list[detection.DetectedFace],
               probabilities: np.ndarray, class_names: list[str]) -> dict:
    """The JSON-ready line of one frame: its faces as the photo lines describe them."""
    return {"file": name, "frame": index, "time": round(seconds, 3), "faces": len(faces),
            "detections": [face_entry(i, face, row, class_names)
                           for i, (face, row) in enumerate(zip(faces, probabilities,
                                                               strict=True))]}


def add_tracks(line: dict, tracked: list[tuple[int, np.ndarray]], class_names: list[str]
               ) -> None:
    """Adds each face's track and smoothed emotion to a frame line (raw values stay)."""
    for entry, (track, smoothed) in zip(line["detections"], tracked, strict=True):
        entry.update(track=track, **emotion_fields(smoothed, class_names, prefix="smoothed_"))


def timeline_rows(line: dict, class_names: list[str]) -> list[list]:
    """CSV rows of one frame line: frame, time, face, track, box, the raw emotion and
    probabilities, the smoothed emotion and its probability."""
    rows = []
    for entry in line["detections"]:
        box = entry["box"]
        rows.append([line["frame"], line["time"], entry["face"], entry["track"], box["x"],
                     box["y"], box["width"], box["height"], entry["emotion"],
                     entry["probability"], *(entry["probabilities"][name] for name in class_names),
                     entry["smoothed_emotion"], entry["smoothed_probability"]])
    return rows


def timeline_header(class_names: list[str]) -> list[str]:
    return ["frame", "time", "face", "track", "x", "y", "width", "height", "emotion",
            "probability", *class_names, "smoothed_emotion", "smoothed_probability"]


class _Progress:
    """tqdm on stderr when it is installed (only on a terminal), else a line every 5 s."""

    def __init__(self, total: int | None, name: str):
        self._count, self._last, self._name = 0, time.monotonic(), name
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
        else:
            self._bar = tqdm(total=total, desc=name, unit="frame", file=sys.stderr,
                             disable=None, leave=False)

    def update(self, frames: int) -> None:
        self._count += frames
        if self._bar is not None:
            self._bar.update(frames)
        elif time.monotonic() - self._last > 5:
            self._last = time.monotonic()
            print(f"{self._name}: {self._count} frames", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Outputs:
    """The JSONL, CSV and MP4 files of one video, written locally and copied to `output_dir`
    at the end when that is remote (gs://)."""

    def __init__(self, output_dir: str, stem: str, class_names: list[str], fps: float):
        self._remote = "://" in output_dir
        self._tmp = tempfile.mkdtemp() if self._remote else None
        self._dir = output_dir
        local_dir = self._tmp or output_dir
        self.paths = {kind: posixpath.join(output_dir, f"{stem}.{kind}")
                      for kind in ("jsonl", "csv", "mp4", "summary.json")}
        self._local = {kind: os.path.join(local_dir, f"{stem}.{kind}") for kind in self.paths}
        self._jsonl = open(self._local["jsonl"], "w")  # noqa: SIM115  (closed in close())
        self._csv_file = open(self._local["csv"], "w", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(timeline_header(class_names))
        self._class_names, self._fps, self._video = class_names, fps, None

    def write(self, line: dict, frame: np.ndarray, faces: list[detection.DetectedFace]) -> None:
        self._jsonl.write(json.dumps(line) + "\n")
        self._csv.writerows(timeline_rows(line, self._class_names))
        labels = [label_text(entry["smoothed_emotion"], entry["smoothed_probability"])
                  for entry in line["detections"]]
        annotated = draw_faces(frame, [face.box for face in faces], labels)
        if self._video is None:
            height, width = annotated.shape[:2]
            self._video = cv2.VideoWriter(self._local["mp4"], cv2.VideoWriter_fourcc(*_FOURCC),
                                          self._fps, (width, height))
        self._video.write(annotated)

    def close(self, tracks: list[dict]) -> None:
        with open(self._local["summary.json"], "w") as f:
            json.dump({"tracks": tracks}, f, indent=1)
        self._jsonl.close()
        self._csv_file.close()
        if self._video is not None:
            self._video.release()
        else:  # no frame could be read: there is no video to point to
            self.paths.pop("mp4")
        if self._remote:
            for kind, path in self.paths.items():
                if os.path.exists(self._local[kind]):
                    tf.io.gfile.copy(self._local[kind], path, overwrite=True)
            shutil.rmtree(self._tmp, ignore_errors=True)


def predict_video(classifier, capture: cv2.VideoCapture, name: str, options: FrameOptions, *,
                  output_stem: str | None = None, output_dir: str | None = None,
                  out: TextIO = sys.stdout, live: bool = False) -> VideoSummary:
    """Reads `capture` to its end (or options.max_frames), writing a line per frame read to
    `out` and, with `output_dir`, the JSONL, CSV and MP4 files named `output_stem`.*."""
    summary = VideoSummary()
    fps = (capture.get(cv2.CAP_PROP_FPS) or _FALLBACK_FPS) / options.every_n_frames
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    expected = -(-total // options.every_n_frames) if total > 0 and not live else None
    if expected is not None and options.max_frames is not None:
        expected = min(expected, options.max_frames)
    outputs = (_Outputs(output_dir, output_stem or "video", classifier.class_names, fps)
               if output_dir is not None else None)
    progress = _Progress(expected, name)
    tracker = tracking.FaceTracker(classifier.class_names, options.smooth_frames)
    sinks = _FrameSinks(tracker, outputs, out)
    try:
        batches = _batches(frames(capture, options.every_n_frames, options.max_frames, live),
                           options)
        for batch in batches:
            _classify_batch(classifier, batch, name, sinks, summary)
            progress.update(len(batch))
    except KeyboardInterrupt:  # a camera runs until Ctrl-C: keep what was written
        pass
    finally:
        progress.close()
        summary.tracks = tracker.summary()
        if outputs is not None:
            outputs.close(summary.tracks)
            summary.outputs = outputs.paths
    out.write(json.dumps({"file": name, "frames": summary.frames, "tracks": summary.tracks})
              + "\n")
    out.flush()
    return summary


def _batches(frame_iter, options: FrameOptions):
    """Lists of (index, time, frame, faces, crops), batch_frames frames each."""
    batch = []
    for index, seconds, frame in frame_iter:
        faces = detection.detect(frame, options.min_face_size, options.detector)
        batch.append((index, seconds, frame, faces,
                      detection.crop_faces(frame, faces, options.margin)))
        if len(batch) >= options.batch_frames:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclasses.dataclass(frozen=True)
class _FrameSinks:
    """Where each classified frame goes: the tracker (smoothing), the files, the stream."""

    tracker: tracking.FaceTracker
    outputs: _Outputs | None
    out: TextIO


def _classify_batch(classifier, batch, name, sinks: _FrameSinks, summary) -> None:
    tracker, outputs, out = sinks.tracker, sinks.outputs, sinks.out
    crops = np.concatenate([item[4] for item in batch])
    probabilities = classifier.probabilities(crops)
    start = 0
    for index, seconds, frame, faces, _ in batch:
        rows = probabilities[start:start + len(faces)]
        start += len(faces)
        line = frame_line(name, index, seconds, faces, rows, classifier.class_names)
        add_tracks(line, tracker.update(index, [face.box for face in faces], rows),
                   classifier.class_names)
        if outputs is not None:
            outputs.write(line, frame, faces)
            line = {**line, "timeline": outputs.paths["csv"], "annotated": outputs.paths["mp4"]}
        out.write(json.dumps(line) + "\n")
        summary.frames += 1
        summary.faces += len(faces)
    out.flush()


@contextlib.contextmanager
def local_video(path: str):
    """`path` when local, else a temporary local copy (FFmpeg reads local files)."""
    if "://" not in path:
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, posixpath.basename(path))
        tf.io.gfile.copy(path, local)
        yield local
