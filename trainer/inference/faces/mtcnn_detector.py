"""MTCNN face detection (PyPI `mtcnn` 1.x): boxes, confidences and five landmarks per face.

The three networks' weights ship inside the `mtcnn` wheel (assets/weights/*.lz4), so nothing is
downloaded. They run on TensorFlow, eagerly, one image at a time here. Like the Haar cascade,
large photos are searched at DETECTION_MAX_SIDE and the results scaled back: MTCNN's image
pyramid grows with the pixel count and 1024 px still shows faces of ~25 px of a 4000 px photo.
"""

from __future__ import annotations

import importlib.resources

import cv2
import numpy as np

from trainer.inference.faces.face_types import (
    LANDMARK_NAMES,
    MTCNN,
    Box,
    DetectedFace,
    FaceDetectorUnavailableError,
    search_scale,
)

# mtcnn 1.0.0 sizes its image pyramid by the photo alone, then starts it at scale
# 12 / min_face_size: above ~23 px its last level is under PNet's 12 px window, the network
# raises, and mtcnn reports "no faces" for every photo. So it always gets a min_face_size of at
# most this, and larger minimum sizes are met by shrinking the photo first (the same pyramid
# levels, fewer pixels).
_MTCNN_SAFE_MIN_FACE = 20
# Faces the last network (ONet) scores below this are dropped. mtcnn keeps 0.8 and up; every
# true face measured for the README scored >= 0.987 (the no-face photos gave no candidate at
# all), so 0.9 only drops doubtful detections.
MIN_CONFIDENCE = 0.9


class MtcnnDetector:
    """`mtcnn.MTCNN` with its weights loaded by absolute path from the installed package.

    (mtcnn looks for `pnet.lz4` etc. in the current directory first; naming the package's own
    files means a stray file of that name in the working directory is never loaded.)
    """

    name = MTCNN

    def __init__(self, min_confidence: float = MIN_CONFIDENCE):
        try:
            import mtcnn
            from mtcnn.stages import StageONet, StagePNet, StageRNet
        except ImportError as e:
            raise FaceDetectorUnavailableError(
                f"the MTCNN detector needs the `mtcnn` package ({e}); pip install mtcnn==1.0.0 "
                "(see constraints.txt), or use --detector haar") from e
        weights = importlib.resources.files("mtcnn.assets.weights")
        stages = [StagePNet(weights=str(weights / "pnet.lz4")),
                  StageRNet(weights=str(weights / "rnet.lz4")),
                  StageONet(weights=str(weights / "onet.lz4"))]
        self._mtcnn = mtcnn.MTCNN(stages=stages, device="CPU:0")
        self.min_confidence = min_confidence

    def detect(self, photo: np.ndarray, min_face_size: int) -> list[DetectedFace]:
        """Faces of at least `min_face_size` photo pixels, left to right (then top to bottom)."""
        scale = min(search_scale(photo.shape), _MTCNN_SAFE_MIN_FACE / min_face_size)
        rgb = _as_rgb(photo)
        if scale < 1.0:
            rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        smallest = min(_MTCNN_SAFE_MIN_FACE, max(1, round(min_face_size * scale)))
        found = self._mtcnn.detect_faces(rgb, min_face_size=smallest)
        faces = [_to_face(result, scale) for result in found
                 if result["confidence"] >= self.min_confidence]
        faces = [face for face in faces if max(face.box.width, face.box.height) >= min_face_size]
        return sorted(faces, key=lambda face: (face.box.x, face.box.y))


def _as_rgb(photo: np.ndarray) -> np.ndarray:
    if photo.ndim == 2:
        return cv2.cvtColor(photo, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)


def _to_face(result: dict, scale: float) -> DetectedFace:
    x, y, width, height = (round(float(v) / scale) for v in result["box"])
    points = np.array([result["keypoints"][name] for name in LANDMARK_NAMES], np.float32) / scale
    return DetectedFace(Box(x, y, width, height), points, float(result["confidence"]))
