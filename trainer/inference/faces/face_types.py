"""What face finding shares: a detected face (box, landmarks), the detector interface and
its names, and the errors and limits every detector keeps (trainer.inference.faces.detection chooses
and runs one; mtcnn_detector and alignment build on these)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from beam_preprocess.user_error import UserError

MTCNN, HAAR = "mtcnn", "haar"
# fer2013 faces show a little more than a Haar box (the forehead and the chin): each side of
# the box grows by this fraction of its width before cropping.
DEFAULT_MARGIN = 0.1
DETECTION_MAX_SIDE = 1024


class FaceDetectorUnavailableError(UserError, RuntimeError):
    """A detector cannot run here: no Haar cascade in this OpenCV, or no `mtcnn` package."""


@dataclasses.dataclass(frozen=True)
class Box:
    """A face rectangle in photo pixels: top-left corner and size."""

    x: int
    y: int
    width: int
    height: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# The five MTCNN landmarks, in this order; "left" is the photo's left (the person's right eye).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclasses.dataclass(frozen=True)
class DetectedFace:
    """A face as a detector reports it: its box, and its five landmarks [5, 2] (x, y in photo
    pixels, in LANDMARK_NAMES order) when the detector gives them."""

    box: Box
    landmarks: np.ndarray | None = None
    confidence: float | None = None

    def landmarks_dict(self) -> dict[str, list[int]] | None:
        if self.landmarks is None:
            return None
        return {name: [round(float(v)) for v in point]
                for name, point in zip(LANDMARK_NAMES, self.landmarks, strict=True)}


class FaceDetector(Protocol):
    """Finds faces in a uint8 BGR [H, W, 3] or grey [H, W] photo, left to right."""

    name: str

    def detect(self, photo: np.ndarray, min_face_size: int) -> list[DetectedFace]: ...


def search_scale(shape: tuple[int, ...]) -> float:
    """The factor (<= 1) that brings a photo's longer side down to DETECTION_MAX_SIDE."""
    return min(1.0, DETECTION_MAX_SIDE / max(shape[:2]))
