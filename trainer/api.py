"""The Python API: facial emotions from code, with the library the commands use.

    from trainer.api import EmotionReader

    reader = EmotionReader("demo_output/job/model")    # any export, gs:// too; a list: ensemble
    for face in reader.read("photo.jpg"):              # a path, URL, NumPy array or PIL image
        print(face.emotion, round(face.probability, 2), face.box)

`read` finds the faces (MTCNN by default), aligns and crops them as `trainer.predict` does and
classifies them; `read_batch` does the same for several images with one call of the network.
NumPy arrays are taken as OpenCV gives them (uint8 BGR, or grey 2-D), as `fer` and `deepface`
take them; PIL images in any mode, turned upright by their EXIF orientation.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.request
import warnings
from collections.abc import Sequence

import numpy as np

from trainer.export.loader import load_ensemble
from trainer.inference.faces import detection
from trainer.inference.files import PhotoLimits, UnreadablePhotoError, decode_photo, read_photo

URL_TIMEOUT_SECONDS = 30


@dataclasses.dataclass(frozen=True)
class Face:
    """One face found in an image: where it is and what the model reads in it."""

    box: detection.Box  # x, y, width, height in the image's pixels
    landmarks: dict[str, list[int]] | None  # the five MTCNN points; None with the Haar detector
    probabilities: dict[str, float]  # class name -> probability, in the model's class order

    @property
    def emotion(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    @property
    def probability(self) -> float:
        return self.probabilities[self.emotion]

    def as_dict(self) -> dict:
        """The fields of a `trainer.predict` line for this face (unrounded)."""
        entry = {"box": self.box.as_dict(), "emotion": self.emotion,
                 "probability": self.probability, "probabilities": dict(self.probabilities)}
        if self.landmarks is not None:
            entry["landmarks"] = self.landmarks
        return entry


class EmotionReader:
    """An exported model plus a face detector: images in, `Face`s out."""

    def __init__(self, model: str | os.PathLike | Sequence[str | os.PathLike], *,
                 detector: str = detection.DEFAULT_DETECTOR,
                 margin: float = detection.DEFAULT_MARGIN,
                 min_face_size: int = detection.DEFAULT_MIN_FACE_SIZE):
        paths = [model] if isinstance(model, (str, os.PathLike)) else list(model)
        self.model = load_ensemble([os.fspath(path) for path in paths])
        if self.model.synthetic_warning:
            warnings.warn(self.model.synthetic_warning.removeprefix("warning: "), UserWarning,
                          stacklevel=2)
        self.detector = detection.get_detector(detector)
        self.margin = margin
        self.min_face_size = min_face_size

    @property
    def class_names(self) -> list[str]:
        return self.model.class_names

    @property
    def provenance(self) -> dict:
        """What the model was trained on (trainer.export.provenance)."""
        return self.model.provenance

    def read(self, image) -> list[Face]:
        """The faces of one image (path, http(s) URL, NumPy array or PIL image), left to right."""
        return self.read_batch([image])[0]

    def read_batch(self, images: Sequence) -> list[list[Face]]:
        """The faces of each image, the network run once over all of them."""
        photos = [as_bgr(image) for image in images]
        if not photos:
            return []
        found = [detection.detect(photo, self.min_face_size, self.detector) for photo in photos]
        crops = [detection.crop_faces(photo, faces, self.margin)
                 for photo, faces in zip(photos, found, strict=True)]
        probabilities = iter(self.model.probabilities(np.concatenate(crops)))
        return [[self._face(face, next(probabilities)) for face in faces] for faces in found]

    def _face(self, face: detection.DetectedFace, row: np.ndarray) -> Face:
        return Face(face.box, face.landmarks_dict(),
                    {name: float(p) for name, p in zip(self.class_names, row, strict=True)})


def as_bgr(image) -> np.ndarray:
    """uint8 BGR [H, W, 3] or grey [H, W] from a path (local or gs://), an http(s) URL, a PIL
    image or a NumPy array; UnreadablePhotoError or ValueError saying what is wrong."""
    if isinstance(image, np.ndarray):
        return _checked_array(image)
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        return _fetch(path) if path.startswith(("http://", "https://")) else read_photo(path)
    if hasattr(image, "convert") and hasattr(image, "getexif"):  # a PIL image
        from PIL import ImageOps

        rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        return np.ascontiguousarray(rgb[:, :, ::-1])
    raise TypeError(f"an image is a path, an http(s) URL, a NumPy array or a PIL image, "
                    f"not {type(image).__name__}")


def _checked_array(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"a NumPy image must be uint8 (as OpenCV reads photos), got "
                         f"{image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3):
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])  # BGRA: the alpha plane has no face
    raise ValueError(f"a NumPy image is [H, W] grey or [H, W, 3] BGR, got shape {image.shape}")


def _fetch(url: str) -> np.ndarray:
    limit = PhotoLimits().max_bytes
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_SECONDS) as response:
            data = response.read(limit + 1)
    except OSError as error:  # URLError and HTTPError are OSErrors
        raise UnreadablePhotoError(f"{url}: cannot fetch ({error})") from error
    return decode_photo(data, url)
