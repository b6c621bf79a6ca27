"""`python -m launch predict`: the faces in photos, read by a model deployed with `launch deploy`.

Faces are found here, with the trainer's face finder (trainer.inference.faces.detection
.find_faces: the same boxes and 48x48 grey crops `python -m trainer.predict` uses); only the
crops go to
the endpoint, as PredictRequest instances (48x48 lists of 0..255, what the SavedModel's
serving_default takes as `faces`). Standard output gets one JSON line per face, as
trainer.inference.photos prints them:
  {"file", "faces", "face", "box": {"x", "y", "width", "height"}, "emotion", "probability",
   "probabilities": {class: p}}
a photo without faces gets {"file", "faces": 0}, an unreadable file {"file", "error"}.
Exit status: 0 when every photo was read, 1 when some were not (or the endpoint failed), 2 for
bad flags.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TextIO

from absl import flags

from launch.common.errors import LaunchError, load_credentials
from launch.common.flags import cloud_flags
from launch.common.validation import check_region
from trainer.inference.emotion_fields import emotion_fields

USAGE = """\
python -m launch predict --endpoint ENDPOINT --project P --region R PHOTO_OR_DIR... \\
    [--batch_size 32] [--dry_run]"""
MAX_BATCH = 64  # a face is ~16 kB of request JSON; Vertex AI takes at most 1.5 MB per request


def define_flags() -> flags.FlagValues:
    fv = cloud_flags("the endpoint",
                     "the PredictRequests of the faces found, as JSON lines")
    flags.DEFINE_string("endpoint", None, "Endpoint ID or resource name (`launch deploy` prints "
                        "it).", flag_values=fv)
    flags.DEFINE_integer("batch_size", 32, "Faces per request.", lower_bound=1,
                         upper_bound=MAX_BATCH, flag_values=fv)
    flags.DEFINE_float("margin", 0.1, "Each side of a face box grows by this fraction before "
                       "the crop (as trainer.inference.photos).", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_integer("min_face_size", 32, "Smallest face to look for, in photo pixels.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_string("detector", None, "Face detector of trainer.inference.faces.detection "
                        "(e.g. mtcnn, haar; default: its default).", flag_values=fv)
    flags.DEFINE_list("class_names", [], "Class names in the model's order, for endpoints whose "
                      "predictions carry bare probability lists (ours name the classes).",
                      flag_values=fv)
    return fv


@dataclasses.dataclass
class Photo:
    path: str
    boxes: list = dataclasses.field(default_factory=list)
    error: str | None = None


def find_faces_in(paths: list[str], margin: float, min_face_size: int,
                  detector: str | None = None):
    """(photos, faces uint8 [N,48,48], owners [(photo index, face index)]) for the paths."""
    import numpy as np

    from trainer.inference.faces import detection
    from trainer.inference.files import UnreadablePhotoError, expand_photo_paths, read_photo

    choices = getattr(detection, "DETECTOR_CHOICES", None)
    if detector and choices and detector not in choices:
        raise flags.ValidationError(f"--detector={detector!r}: choose one of "
                                    f"{', '.join(choices)}")
    options = {"detector": detector} if detector else {}
    unavailable = getattr(detection, "FaceDetectorUnavailableError", RuntimeError)
    photos, crops, owners = [], [], []
    for path in expand_photo_paths(paths):
        try:
            image = read_photo(path)
        except UnreadablePhotoError as error:
            photos.append(Photo(path, error=str(error)))
            continue
        try:
            boxes, faces = detection.find_faces(image, margin, min_face_size, **options)
        except unavailable as error:
            raise LaunchError(f"The face detector cannot run here: {error}") from None
        photos.append(Photo(path, list(boxes)))
        for i, face in enumerate(faces):
            crops.append(face)
            owners.append((len(photos) - 1, i))
    faces = np.stack(crops) if crops else np.zeros((0, 48, 48), np.uint8)
    return photos, faces, owners


def _box(box) -> dict:
    return box.as_dict() if hasattr(box, "as_dict") else dataclasses.asdict(box)


def face_result(prediction: dict, class_names: list[str]) -> dict:
    """emotion, probability, probabilities from one prediction of the endpoint."""
    probabilities = prediction.get("probabilities") if isinstance(prediction, dict) else None
    if isinstance(probabilities, dict):
        named = {str(k): float(v) for k, v in probabilities.items()}
    elif isinstance(probabilities, list):
        if len(class_names) != len(probabilities):
            raise LaunchError(
                f"The endpoint returned {len(probabilities)} probabilities without class names"
                + (f", but --class_names has {len(class_names)}" if class_names else "")
                + ": pass --class_names in the model's order (labels.json beside the export).")
        named = dict(zip(class_names, map(float, probabilities), strict=True))
    else:
        raise LaunchError(f"Unexpected prediction from the endpoint: {json.dumps(prediction)[:200]}"
                          " (expected {\"probabilities\": ...}; is it serving a vggface-emotion "
                          "export with the predictor image?)")
    return emotion_fields(list(named.values()), list(named))


def lines_for(photos: list[Photo], results: dict[tuple[int, int], dict]) -> list[dict]:
    lines = []
    for p, photo in enumerate(photos):
        if photo.error is not None:
            lines.append({"file": photo.path, "error": photo.error})
        elif not photo.boxes:
            lines.append({"file": photo.path, "faces": 0})
        else:
            for f, box in enumerate(photo.boxes):
                lines.append({"file": photo.path, "faces": len(photo.boxes), "face": f,
                              "box": _box(box), **results[(p, f)]})
    return lines


def batches(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def run(fv: flags.FlagValues, paths: list[str], out: TextIO = sys.stdout, client=None) -> int:
    from launch.common import cloud_imports

    endpoint_request = cloud_imports.require("launch.endpoint.request", "predict")
    endpoint = endpoint_request.endpoint_resource(fv.endpoint, fv.project, check_region(fv.region))
    photos, faces, owners = find_faces_in(paths, fv.margin, fv.min_face_size, fv.detector)
    if not photos:
        raise flags.ValidationError("no photos found in " + " ".join(paths))
    groups = batches(len(faces), fv.batch_size)
    if fv.dry_run:
        for group in groups:
            request = endpoint_request.predict_request(endpoint, faces[group.start:group.stop])
            out.write(json.dumps({
                "predictRequest": endpoint_request.to_dict(request),
                "faces": [{"file": photos[owners[i][0]].path, "face": owners[i][1],
                           "box": _box(photos[owners[i][0]].boxes[owners[i][1]])}
                          for i in group],
            }) + "\n")
        return 0
    from launch.endpoint import submit as endpoint_submit

    if client is None and groups:
        client = endpoint_submit.prediction_client(fv.region, load_credentials())
    results: dict[tuple[int, int], dict] = {}
    for group in groups:
        response = endpoint_submit.predict(
            client, endpoint_request.predict_request(endpoint, faces[group.start:group.stop]))
        predictions = response.get("predictions", [])
        if len(predictions) != len(group):
            raise LaunchError(f"The endpoint returned {len(predictions)} predictions for "
                              f"{len(group)} faces.")
        for i, prediction in zip(group, predictions, strict=True):
            results[owners[i]] = face_result(prediction, fv.class_names)
    for line in lines_for(photos, results):
        out.write(json.dumps(line) + "\n")
    out.flush()
    unreadable = sum(photo.error is not None for photo in photos)
    print(f"{len(photos) - unreadable} photos read, {len(faces)} faces, {unreadable} unreadable",
          file=sys.stderr)
    return 1 if unreadable else 0


def main(argv: list[str]) -> int:
    fv = define_flags()
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(USAGE + "\n\n" + fv.get_help())
        return 0
    paths = fv(argv)[1:]
    for name in ("endpoint", "project", "region"):
        if not fv[name].value:
            raise flags.ValidationError(f"--{name} is required")
    if not paths:
        raise flags.ValidationError("give at least one photo or directory of photos")
    return run(fv, paths)
