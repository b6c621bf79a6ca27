"""Test photos made from Grace Hopper's portrait (it ships with matplotlib), with known faces.

Each composite knows where its faces are, so a detector's answer can be scored: faces found
(a detection whose centre lies within half a face of a true centre) and false hits (others).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from matplotlib import cbook

# Where the face is in grace_hopper.jpg (512 x 600), read off the photo: between the eyes and
# the mouth; and its size (Haar's box is 231 px, MTCNN's 168 x 216).
HOPPER_FACE_CENTRE = (265.0, 215.0)
HOPPER_FACE_SIZE = 200.0


@dataclasses.dataclass
class Composite:
    name: str
    photo: np.ndarray
    centres: list[tuple[float, float]]  # true face centres, photo pixels
    face_size: float  # about how wide each face is


def hopper() -> np.ndarray:
    return cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def rotated(photo: np.ndarray, degrees: float, centre=HOPPER_FACE_CENTRE) -> np.ndarray:
    """`photo` turned `degrees` counter-clockwise about `centre` (the face stays in place)."""
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(photo, matrix, photo.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def _paste(canvas: np.ndarray, tile: np.ndarray, x: int, y: int) -> None:
    canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile


def several(angles=(0.0, 25.0, -25.0), scale: float = 0.5) -> Composite:
    """Three copies of the portrait side by side, turned by `angles`, on a grey wall."""
    tile = cv2.resize(hopper(), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    height, width = tile.shape[:2]
    canvas = np.full((height + 40, len(angles) * (width + 20) + 20, 3), 128, np.uint8)
    centres = []
    for i, angle in enumerate(angles):
        x, y = 20 + i * (width + 20), 20
        centre = (HOPPER_FACE_CENTRE[0] * scale, HOPPER_FACE_CENTRE[1] * scale)
        _paste(canvas, rotated(tile, angle, centre), x, y)
        centres.append((x + centre[0], y + centre[1]))
    return Composite(f"3 faces, {'/'.join(f'{a:g}' for a in angles)} deg", canvas, centres,
                     HOPPER_FACE_SIZE * scale)


def tilted(degrees: float = 25.0) -> Composite:
    return Composite(f"1 face, {degrees:g} deg", rotated(hopper(), degrees),
                     [HOPPER_FACE_CENTRE], HOPPER_FACE_SIZE)


def small(face_pixels: float = 40.0) -> Composite:
    """A crowd-photo-sized face: the portrait shrunk so the face is ~`face_pixels` wide, in a
    1000 x 800 scene."""
    scale = face_pixels / HOPPER_FACE_SIZE
    tile = cv2.resize(hopper(), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((800, 1000, 3), 90, np.uint8)
    x, y = 600, 300
    _paste(canvas, tile, x, y)
    centre = (x + HOPPER_FACE_CENTRE[0] * scale, y + HOPPER_FACE_CENTRE[1] * scale)
    return Composite(f"1 face of {face_pixels:g} px in 1000x800", canvas, [centre], face_pixels)


def dark(gain: float = 0.25, noise: float = 4.0, seed: int = 0) -> Composite:
    """The portrait under-exposed (`gain` of its light) with sensor noise."""
    rng = np.random.default_rng(seed)
    photo = hopper().astype(np.float32) * gain + rng.normal(0, noise, hopper().shape)
    return Composite(f"1 face, dark (x{gain:g}, noise {noise:g})",
                     np.clip(photo, 0, 255).astype(np.uint8), [HOPPER_FACE_CENTRE],
                     HOPPER_FACE_SIZE)


def all_composites() -> list[Composite]:
    return [several(), tilted(25.0), small(40.0), dark()]


def score(boxes, centres, face_size) -> tuple[int, int]:
    """(true faces found, false hits) of detected `boxes` (detection.Box)."""
    found, false_hits = set(), 0
    for box in boxes:
        cx, cy = box.x + box.width / 2, box.y + box.height / 2
        near = [i for i, (tx, ty) in enumerate(centres)
                if abs(cx - tx) < face_size / 2 and abs(cy - ty) < face_size / 2]
        if near:
            found.add(near[0])
        else:
            false_hits += 1
    return len(found), false_hits
