"""Faces in ordinary photos: find them and cut each out as fer2013 shows faces (48x48 grey).

Two detectors, chosen by name (`get_detector`):
  - "mtcnn" (default): the MTCNN networks of PyPI `mtcnn`, whose weights ship inside its wheel
    (trainer.inference.faces.mtcnn_detector). It also gives five landmarks, and each face is then
    aligned (eyes level, fer2013 framing) before the crop (trainer.inference.faces.alignment).
  - "haar": OpenCV's frontal-face Haar cascade, the XML file inside the opencv-python-headless
    wheel (`cv2.data.haarcascades`): fast, upright frontal faces only, cropped from its box.
Nothing is downloaded at run time. OpenCV 5 dropped the cascade classifier and its data files;
this module needs OpenCV 4.x.
"""

from __future__ import annotations

import functools
import os

import cv2
import numpy as np

from beam_preprocess.record_format import SOURCE_IMAGE_SIZE
from trainer.inference.faces.alignment import align_face
from trainer.inference.faces.face_types import (
    DEFAULT_MARGIN,
    HAAR,
    MTCNN,
    Box,
    DetectedFace,
    FaceDetector,
    FaceDetectorUnavailableError,
    search_scale,
)

CASCADE_FILENAME = "haarcascade_frontalface_default.xml"
# Faces much smaller than fer2013's 48 px carry little detail.
DEFAULT_MIN_FACE_SIZE = 32
_CASCADE_WINDOW = 24  # the frontal-face cascade's own size: it finds nothing smaller
DETECTOR_CHOICES = (MTCNN, HAAR)
DEFAULT_DETECTOR = MTCNN


class HaarDetector:
    """OpenCV's frontal-face cascade (`detect_faces`): boxes only, no landmarks."""

    name = HAAR

    def __init__(self):
        frontal_face_detector()  # fails now, with a clear message, if OpenCV lacks it

    def detect(self, photo: np.ndarray, min_face_size: int) -> list[DetectedFace]:
        return [DetectedFace(box) for box in detect_faces(to_gray(photo), min_face_size)]


@functools.cache
def get_detector(name: str = DEFAULT_DETECTOR) -> FaceDetector:
    """The detector called `name` (one of DETECTOR_CHOICES), built once per process.

    Raises FaceDetectorUnavailableError when it cannot run here and ValueError for an unknown
    name. Detectors are not thread-safe: callers that share one across threads serialise calls.
    """
    if name == HAAR:
        return HaarDetector()
    if name == MTCNN:
        # Imported on first use: `mtcnn` brings TensorFlow, which the Haar path never needs.
        from trainer.inference.faces.mtcnn_detector import MtcnnDetector

        return MtcnnDetector()
    raise ValueError(f"Unknown face detector {name!r}; choose one of {', '.join(DETECTOR_CHOICES)}")


@functools.cache
def frontal_face_detector() -> cv2.CascadeClassifier:
    """OpenCV's frontal-face cascade, loaded once; raises FaceDetectorUnavailableError."""
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise FaceDetectorUnavailableError(
            f"OpenCV {cv2.__version__} has no Haar cascade classifier (OpenCV 5 removed it); "
            "install opencv-python-headless 4.x, as pinned in constraints.txt.")
    path = os.path.join(getattr(cv2.data, "haarcascades", ""), CASCADE_FILENAME)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FaceDetectorUnavailableError(
            f"Cannot load the face detector {path}: this OpenCV build ships no Haar cascade "
            "data; install opencv-python-headless 4.x, as pinned in constraints.txt.")
    return cascade


def to_gray(photo: np.ndarray) -> np.ndarray:
    """A uint8 photo, grey [H, W] or OpenCV BGR [H, W, 3], as grey [H, W]."""
    if photo.ndim == 2:
        return photo
    if photo.ndim == 3 and photo.shape[2] == 3:
        return cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    raise ValueError(f"Expected a grey [H, W] or BGR [H, W, 3] image, got shape {photo.shape}")


def detect_faces(gray: np.ndarray, min_face_size: int = DEFAULT_MIN_FACE_SIZE) -> list[Box]:
    """Frontal faces in a grey uint8 photo, left to right (then top to bottom).

    `min_face_size` is in photo pixels. Large photos are searched at DETECTION_MAX_SIDE: the
    cascade's time grows with the pixel count (a 4800 px photo took 9 s, at 1024 px 0.5 s) and
    sensor noise at full size only adds false detections.
    """
    if min_face_size < 1:
        raise ValueError(f"min_face_size must be >= 1, got {min_face_size}")
    scale = search_scale(gray.shape)
    if scale < 1.0:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    min_side = max(_CASCADE_WINDOW, round(min_face_size * scale))
    # Equalising first makes the cascade less sensitive to dim or washed-out photos.
    found = frontal_face_detector().detectMultiScale(
        cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    boxes = [Box(*(round(int(v) / scale) for v in rect)) for rect in found]
    return sorted(boxes, key=lambda b: (b.x, b.y))


def crop_face(gray: np.ndarray, box: Box, margin: float = DEFAULT_MARGIN,
              size: int = SOURCE_IMAGE_SIZE) -> np.ndarray:
    """The face in `box`, grown by `margin` per side, as a square `size` x `size` uint8 image.

    Parts of the grown square outside the photo repeat the edge pixels, so a face at the border
    keeps its place in the crop instead of being stretched.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    side = max(box.width, box.height) * (1 + 2 * margin)
    centre_x, centre_y = box.x + box.width / 2, box.y + box.height / 2
    left, top = int(round(centre_x - side / 2)), int(round(centre_y - side / 2))
    side = int(round(side))
    height, width = gray.shape
    pad = max(0, -left, -top, left + side - width, top + side - height)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    square = gray[top + pad:top + pad + side, left + pad:left + pad + side]
    # INTER_AREA averages the pixels it shrinks, as a camera sensor would: no aliasing.
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def find_faces(photo: np.ndarray, margin: float = DEFAULT_MARGIN,
               min_face_size: int = DEFAULT_MIN_FACE_SIZE,
               detector: str | FaceDetector = DEFAULT_DETECTOR
               ) -> tuple[list[Box], np.ndarray]:
    """(boxes, faces uint8 [N, 48, 48]) for every face in a grey or BGR photo."""
    detected = detect(photo, min_face_size, detector)
    return [face.box for face in detected], crop_faces(photo, detected, margin)


def detect(photo: np.ndarray, min_face_size: int = DEFAULT_MIN_FACE_SIZE,
           detector: str | FaceDetector = DEFAULT_DETECTOR) -> list[DetectedFace]:
    """The faces `detector` (a name or a detector) finds in a grey or BGR photo."""
    if min_face_size < 1:
        raise ValueError(f"min_face_size must be >= 1, got {min_face_size}")
    finder = get_detector(detector) if isinstance(detector, str) else detector
    return finder.detect(photo, min_face_size)


def crop_faces(photo: np.ndarray, detected: list[DetectedFace],
               margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """uint8 [N, 48, 48]: each face aligned by its landmarks when it has them (eyes level,
    fer2013 framing), else cut from its box grown by `margin`."""
    gray = to_gray(photo)
    faces = np.zeros((len(detected), SOURCE_IMAGE_SIZE, SOURCE_IMAGE_SIZE), np.uint8)
    for i, face in enumerate(detected):
        aligned = None if face.landmarks is None else align_face(gray, face.landmarks, margin)
        faces[i] = crop_face(gray, face.box, margin) if aligned is None else aligned
    return faces
