"""Aligning a face by its five landmarks before the 48x48 crop, so that it looks like fer2013's.

fer2013's faces are upright, centred, and framed from the eyebrows' top to the chin; a face
tilted in a photo is not what the model learned from. `align_face` maps the detector's five
landmarks (eyes, nose tip, mouth corners) onto where they sit in such a crop with a similarity
transform (rotation, uniform scale, shift; OpenCV's estimateAffinePartial2D), so the eyes come
out level and the framing matches the Haar path's box + 10 % margin crop.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from beam_preprocess.record_format import SOURCE_IMAGE_SIZE
from trainer.inference.faces.face_types import DEFAULT_MARGIN

# The five landmarks (photo-left eye, photo-right eye, nose tip, left and right mouth corner)
# in a 48x48 crop framed as fer2013 frames faces. Read off Grace Hopper's portrait cropped the
# Haar way (box + 10 % per side), made symmetric; the synthetic faces of beam_preprocess put
# eyes at y ~ 22 and 13-16 px apart, mouths at y ~ 34, so both framings agree within ~2 px.
TEMPLATE_48 = np.array([[16.25, 19.3], [31.75, 19.3], [24.0, 27.6], [17.75, 34.3],
                        [30.25, 34.3]], np.float32)
# A bilinear warp that shrinks more than 2x skips pixels (aliasing); a face larger than that
# is warped to k * size and averaged down by an area resize, as crop_face does.
_MAX_WARP_SHRINK = 2.0


def template(size: int = SOURCE_IMAGE_SIZE, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """TEMPLATE_48 for a `size` crop; a margin other than the default zooms out (or in) about
    the centre, as a larger margin grows the Haar crop."""
    zoom = (1 + 2 * DEFAULT_MARGIN) / (1 + 2 * margin)
    centre = SOURCE_IMAGE_SIZE / 2
    return ((TEMPLATE_48 - centre) * zoom + centre) * (size / SOURCE_IMAGE_SIZE)


def alignment_matrix(landmarks: np.ndarray, size: int = SOURCE_IMAGE_SIZE,
                     margin: float = DEFAULT_MARGIN) -> np.ndarray | None:
    """The 2x3 similarity that takes photo pixels to the aligned `size` crop, or None when the
    landmarks are degenerate (e.g. all in one point)."""
    source = np.asarray(landmarks, np.float32).reshape(-1, 2)
    matrix, _ = cv2.estimateAffinePartial2D(source, template(size, margin), method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all() or _scale_of(matrix) <= 0:
        return None
    return matrix


def align_face(gray: np.ndarray, landmarks: np.ndarray, margin: float = DEFAULT_MARGIN,
               size: int = SOURCE_IMAGE_SIZE) -> np.ndarray | None:
    """The face with these landmarks as an upright `size` x `size` uint8 crop, or None when no
    similarity fits them. Outside the photo the edge pixels repeat (as crop_face does)."""
    matrix = alignment_matrix(landmarks, size, margin)
    if matrix is None:
        return None
    factor = max(1, math.ceil(1 / (_scale_of(matrix) * _MAX_WARP_SHRINK)))
    if factor == 1:
        return cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    large = cv2.warpAffine(gray, matrix * factor, (size * factor, size * factor),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(large, (size, size), interpolation=cv2.INTER_AREA)


def eye_tilt_degrees(landmarks: np.ndarray) -> float:
    """The angle of the line from the photo-left eye to the photo-right eye (0 = level)."""
    (left_x, left_y), (right_x, right_y) = np.asarray(landmarks, np.float64)[:2]
    return math.degrees(math.atan2(right_y - left_y, right_x - left_x))


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points [N, 2] mapped by a 2x3 affine matrix."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def _scale_of(matrix: np.ndarray) -> float:
    return math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
