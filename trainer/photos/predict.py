"""Find the faces in photos and read their emotions with an exported model.

    python -m trainer.photos.predict --model JOB_DIR/export/saved_model PHOTO_OR_DIR... [--output DIR]

--model is the SavedModel directory or model.keras, local or gs://. A directory argument stands
for its photo files (.jpg .jpeg .png .bmp .webp .tif .tiff, not recursive).

Standard output gets one JSON line per face:
  {"file": ..., "faces": N, "face": i, "box": {"x", "y", "width", "height"},
   "emotion": top class, "probability": its probability, "probabilities": {class: p, ...}}
a photo without a face gets one line {"file": ..., "faces": 0}, and a file that cannot be read
or decoded gets {"file": ..., "error": "..."} and is skipped. Faces are numbered left to right.
With --output, each photo read is also written there as <name>.png with the faces boxed and
labelled, and its lines carry "annotated": that path.

Exit status: 0 when every file was read (with or without faces), 1 when some could not be read,
2 when the command itself is wrong (no photos, bad flags, a model that cannot be loaded).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import sys
from typing import TextIO

import numpy as np
import tensorflow as tf

from trainer.photos import detection as face_finder
from trainer.photos.annotate import draw_faces, label_text
from trainer.photos.files import UnreadablePhotoError, expand_photo_paths, read_photo, write_png

EXIT_OK = 0
EXIT_UNREADABLE = 1
EXIT_USAGE = 2
_DECIMALS = 4


@dataclasses.dataclass
class Summary:
    photos: int = 0
    faces: int = 0
    unreadable: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_UNREADABLE if self.unreadable else EXIT_OK


def face_lines(path: str, boxes: list[face_finder.Box], probabilities: np.ndarray,
               class_names: list[str]) -> list[dict]:
    """The JSON-ready line of each face of one photo (one `faces: 0` line if there is none)."""
    if not boxes:
        return [{"file": path, "faces": 0}]
    lines = []
    for index, (box, row) in enumerate(zip(boxes, probabilities, strict=True)):
        top = int(np.argmax(row))
        lines.append({
            "file": path, "faces": len(boxes), "face": index, "box": box.as_dict(),
            "emotion": class_names[top], "probability": round(float(row[top]), _DECIMALS),
            "probabilities": {name: round(float(p), _DECIMALS)
                              for name, p in zip(class_names, row, strict=True)},
        })
    return lines


def annotated_path(path: str, output_dir: str, taken: set[str]) -> str:
    """`<output_dir>/<photo name>.png`, numbered when two photos share a name in one run."""
    stem = posixpath.splitext(posixpath.basename(path.rstrip("/")))[0] or "photo"
    candidate, number = f"{stem}.png", 1
    while candidate in taken:
        number += 1
        candidate = f"{stem}-{number}.png"
    taken.add(candidate)
    return posixpath.join(output_dir, candidate)


def predict_photos(classifier, paths: list[str], output_dir: str | None = None,
                   margin: float = face_finder.DEFAULT_MARGIN,
                   min_face_size: int = face_finder.DEFAULT_MIN_FACE_SIZE,
                   out: TextIO = sys.stdout) -> Summary:
    """Writes the JSON lines of every photo in `paths` (directories expanded) to `out`.

    `classifier` is a trainer.serving.loader.FaceClassifier. Unreadable files are reported in
    the output and counted, never raised.
    """
    summary = Summary()
    taken_names: set[str] = set()
    if output_dir is not None:
        tf.io.gfile.makedirs(output_dir)
    for path in expand_photo_paths(paths):
        try:
            photo = read_photo(path)
        except UnreadablePhotoError as e:
            summary.unreadable += 1
            _print_line({"file": path, "error": str(e)}, out)
            continue
        boxes, crops = face_finder.find_faces(photo, margin, min_face_size)
        probabilities = classifier.probabilities(crops)
        lines = face_lines(path, boxes, probabilities, classifier.class_names)
        if output_dir is not None:
            target = annotated_path(path, output_dir, taken_names)
            labels = [label_text(line["emotion"], line["probability"]) for line in lines
                      if "emotion" in line]
            write_png(draw_faces(photo, boxes, labels), target)
            for line in lines:
                line["annotated"] = target
        for line in lines:
            _print_line(line, out)
        summary.photos += 1
        summary.faces += len(boxes)
    return summary


def _print_line(line: dict, out: TextIO) -> None:
    out.write(json.dumps(line) + "\n")
    out.flush()


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, "Exported model: JOB_DIR/export/saved_model (directory) "
                        "or JOB_DIR/export/model.keras; local or gs://.")
    flags.DEFINE_string("output", None, "Directory (local or gs://) for the photos with boxes "
                        "and labels drawn, as PNG. Default: write none.")
    flags.DEFINE_float("margin", face_finder.DEFAULT_MARGIN, "Each side of a detected face box "
                       "grows by this fraction of its width before the crop, to frame faces as "
                       "fer2013 does.", lower_bound=0.0)
    flags.DEFINE_integer("min_face_size", face_finder.DEFAULT_MIN_FACE_SIZE,
                         "Smallest face to look for, in photo pixels.", lower_bound=1)
    flags.mark_flag_as_required("model")
    return flags.FLAGS


def _main(argv: list[str]) -> int:
    from absl import app, flags

    from trainer.serving.loader import ModelLoadError, load_classifier

    flag_values = flags.FLAGS
    if len(argv) < 2:
        raise app.UsageError("Give at least one photo or directory of photos.",
                             exitcode=EXIT_USAGE)
    try:
        # Before loading the model: a bad --output or OpenCV fails in a second, not a minute.
        face_finder.frontal_face_detector()
        if flag_values.output:
            tf.io.gfile.makedirs(flag_values.output)
        classifier = load_classifier(flag_values.model)
        summary = predict_photos(classifier, argv[1:], flag_values.output, flag_values.margin,
                                 flag_values.min_face_size)
    except (ModelLoadError, face_finder.FaceDetectorUnavailableError, tf.errors.OpError,
            OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{summary.photos} photos read, {summary.faces} faces, {summary.unreadable} "
          "unreadable", file=sys.stderr)
    return summary.exit_code


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(_main)
