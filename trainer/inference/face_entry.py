"""One face of a photo or a video frame as the JSON lines describe it (trainer.predict, the web
demo): its number, box, emotion fields (trainer.inference.emotion_fields) and landmarks."""

from __future__ import annotations

import numpy as np

from trainer.inference.emotion_fields import emotion_fields
from trainer.inference.faces.detection import Box, DetectedFace


def face_entry(index: int, face: DetectedFace | Box, row: np.ndarray,
               class_names: list[str]) -> dict:
    """One face's fields: face, box, emotion, probability, probabilities[, landmarks]."""
    detected = face if isinstance(face, DetectedFace) else DetectedFace(face)
    entry = {"face": index, "box": detected.box.as_dict(), **emotion_fields(row, class_names)}
    if detected.landmarks is not None:
        entry["landmarks"] = detected.landmarks_dict()
    return entry
