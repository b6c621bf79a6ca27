"""Find the faces in photos and videos and read their emotions with an exported model.

The library behind `python -m trainer.predict` (trainer/predict.py) and the web demo.
One JSON line per face of a photo:
  {"file": ..., "faces": N, "face": i, "box": {"x", "y", "width", "height"},
   "emotion": top class, "probability": its probability, "probabilities": {class: p, ...},
   "landmarks": {"left_eye": [x, y], ...} (MTCNN only)}
a photo without a face gets one line {"file": ..., "faces": 0}, and a file that cannot be read
or decoded gets {"file": ..., "error": "..."} and is skipped. Faces are numbered left to right.
With an output directory each photo read is also written there as <name>.png with the faces
boxed and labelled, and its lines carry "annotated": that path. Videos get one line per frame
read (trainer.inference.video).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import sys
from typing import TextIO

import numpy as np
import tensorflow as tf

from trainer.inference import video
from trainer.inference.annotate import draw_faces, label_text
from trainer.inference.face_entry import face_entry
from trainer.inference.faces import detection as face_finder
from trainer.inference.files import (
    NotAnImageError,
    UnreadablePhotoError,
    expand_photo_paths,
    read_photo,
    write_png,
)

EXIT_OK = 0
EXIT_UNREADABLE = 1
EXIT_USAGE = 2


@dataclasses.dataclass
class Summary:
    photos: int = 0
    faces: int = 0
    unreadable: int = 0
    videos: int = 0
    frames: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_UNREADABLE if self.unreadable else EXIT_OK

    def line(self) -> str:
        """The stderr summary: `2 photos read, 1 faces, 1 unreadable[, 1 videos (N frames)]`."""
        text = f"{self.photos} photos read, {self.faces} faces, {self.unreadable} unreadable"
        return text + (f", {self.videos} videos ({self.frames} frames)" if self.videos else "")


@dataclasses.dataclass
class PredictOptions:
    output_dir: str | None = None
    frames: video.FrameOptions = dataclasses.field(default_factory=video.FrameOptions)


def face_lines(path: str, faces: list, probabilities: np.ndarray,
               class_names: list[str]) -> list[dict]:
    """The JSON-ready line of each face (DetectedFace or Box) of one photo (one `faces: 0` line
    if there is none)."""
    if not faces:
        return [{"file": path, "faces": 0}]
    return [{"file": path, "faces": len(faces), **face_entry(i, face, row, class_names)}
            for i, (face, row) in enumerate(zip(faces, probabilities, strict=True))]


def classify_photo(classifier, photo: np.ndarray, options: video.FrameOptions
                   ) -> tuple[list[face_finder.DetectedFace], np.ndarray]:
    """(faces found, their probabilities [N, C]) for one BGR or grey photo."""
    faces = face_finder.detect(photo, options.min_face_size, options.detector)
    crops = face_finder.crop_faces(photo, faces, options.margin)
    return faces, classifier.probabilities(crops)


def annotate(photo: np.ndarray, faces: list[face_finder.DetectedFace],
             lines: list[dict]) -> np.ndarray:
    """The photo with each face boxed and labelled with its emotion."""
    labels = [label_text(line["emotion"], line["probability"]) for line in lines
              if "emotion" in line]
    return draw_faces(photo, [face.box for face in faces], labels)


def annotated_path(path: str, output_dir: str, taken: set[str], suffix: str = ".png") -> str:
    """`<output_dir>/<photo name><suffix>`, numbered when two inputs share a name in one run."""
    return posixpath.join(output_dir, output_stem(path, taken, suffix) + suffix)


def output_stem(path: str, taken: set[str], suffix: str) -> str:
    """The input's name without extension, numbered (-2, -3...) if `stem + suffix` is taken."""
    stem = posixpath.splitext(posixpath.basename(path.rstrip("/")))[0] or "photo"
    candidate, number = stem, 1
    while candidate + suffix in taken:
        number += 1
        candidate = f"{stem}-{number}"
    taken.add(candidate + suffix)
    return candidate


def predict_photos(classifier, paths: list[str], output_dir: str | None = None,
                   margin: float = face_finder.DEFAULT_MARGIN,
                   min_face_size: int = face_finder.DEFAULT_MIN_FACE_SIZE,
                   out: TextIO = sys.stdout,
                   detector: str = face_finder.DEFAULT_DETECTOR) -> Summary:
    """Writes the JSON lines of every photo in `paths` (directories expanded) to `out`."""
    frame_options = video.FrameOptions(margin=margin, min_face_size=min_face_size,
                                       detector=detector)
    return predict_paths(classifier, paths, PredictOptions(output_dir, frame_options), out)


def predict_paths(classifier, paths: list[str], options: PredictOptions,
                  out: TextIO = sys.stdout) -> Summary:
    """Writes the JSON lines of every photo and video in `paths` to `out`.

    `classifier` is a trainer.export.loader.ExportedModel. A path is a video by its extension
    (video.VIDEO_EXTENSIONS), or when it is no image but OpenCV reads frames from it.
    Unreadable files are reported in the output and counted, never raised.
    """
    summary = Summary()
    taken_names: set[str] = set()
    if options.output_dir is not None:
        tf.io.gfile.makedirs(options.output_dir)
    for path in expand_photo_paths(paths, extra_extensions=video.VIDEO_EXTENSIONS):
        if video.is_video_path(path):
            _predict_video_file(classifier, path, options, taken_names, out, summary)
            continue
        try:
            photo = read_photo(path)
        except UnreadablePhotoError as e:
            # Only a file no image reader knows may be a video: OpenCV would also open a refused
            # photo (a bomb, a 2x40000 strip) as a one-frame "video" and hand it on.
            if isinstance(e, NotAnImageError) and _opens_as_video(path):
                _predict_video_file(classifier, path, options, taken_names, out, summary)
            else:
                summary.unreadable += 1
                _print_line({"file": path, "error": str(e)}, out)
            continue
        summary.faces += _predict_photo(classifier, path, photo, options, taken_names, out)
        summary.photos += 1
    return summary


def _predict_photo(classifier, path, photo, options, taken_names, out) -> int:
    """Prints (and draws) one photo's lines; returns its number of faces."""
    faces, probabilities = classify_photo(classifier, photo, options.frames)
    lines = face_lines(path, faces, probabilities, classifier.class_names)
    if options.output_dir is not None:
        target = annotated_path(path, options.output_dir, taken_names)
        write_png(annotate(photo, faces, lines), target)
        for line in lines:
            line["annotated"] = target
    for line in lines:
        _print_line(line, out)
    return len(faces)


def _predict_video_file(classifier, path, options, taken_names, out, summary) -> None:
    try:
        with video.local_video(path) as local:
            capture = video.open_capture(local)
            try:
                result = video.predict_video(classifier, capture, path, options.frames,
                                             output_stem=output_stem(path, taken_names, ".mp4"),
                                             output_dir=options.output_dir, out=out)
            finally:
                capture.release()
    except (video.VideoUnavailableError, tf.errors.OpError) as e:
        summary.unreadable += 1
        _print_line({"file": path, "error": f"{path}: {e}"}, out)
        return
    summary.videos += 1
    summary.frames += result.frames
    summary.faces += result.faces


def _opens_as_video(path: str) -> bool:
    try:
        with video.local_video(path) as local:
            return video.can_open_as_video(local)
    except (tf.errors.OpError, OSError):
        return False


def _print_line(line: dict, out: TextIO) -> None:
    out.write(json.dumps(line) + "\n")
    out.flush()
