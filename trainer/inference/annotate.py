"""Drawing what was found on a photo: a box per face and its emotion above it."""

from __future__ import annotations

import cv2
import numpy as np

from trainer.inference.faces.detection import Box

BOX_COLOUR = (0, 200, 0)  # BGR green: visible on skin, hair and most backgrounds
TEXT_COLOUR = (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_text(emotion: str, probability: float) -> str:
    return f"{emotion} {probability:.0%}"


def draw_faces(photo: np.ndarray, boxes: list[Box], labels: list[str]) -> np.ndarray:
    """A BGR copy of `photo` with each box outlined and its label on a filled strip above it
    (below it when the box touches the top edge). Line and text size follow the photo size."""
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    canvas = cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR) if photo.ndim == 2 else photo.copy()
    scale = max(canvas.shape[:2]) / 1000
    thickness = max(1, round(2 * scale))
    font_scale = max(0.5, 0.8 * scale)
    for box, label in zip(boxes, labels, strict=True):
        cv2.rectangle(canvas, (box.x, box.y), (box.x + box.width - 1, box.y + box.height - 1),
                      BOX_COLOUR, thickness)
        (text_w, text_h), baseline = cv2.getTextSize(label, _FONT, font_scale, thickness)
        strip_h = text_h + baseline + 2 * thickness
        top = box.y - strip_h if box.y >= strip_h else box.y + box.height
        cv2.rectangle(canvas, (box.x, top), (box.x + text_w + 2 * thickness, top + strip_h),
                      BOX_COLOUR, cv2.FILLED)
        cv2.putText(canvas, label, (box.x + thickness, top + thickness + text_h), _FONT,
                    font_scale, TEXT_COLOUR, thickness, cv2.LINE_AA)
    return canvas
