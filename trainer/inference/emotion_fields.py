"""The emotion fields of one face, the same in every output that names them: the photo and
video lines of `trainer.predict`, the web demo, the Python API's `as_dict` keys, the Vertex
prediction server and `launch predict`. NumPy only (no TensorFlow): launch/ imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DECIMALS = 6  # float32 probabilities carry ~7 significant digits


def emotion_fields(probabilities: Sequence[float], class_names: Sequence[str],
                   prefix: str = "") -> dict:
    """{"emotion", "probability", "probabilities"} of one face (keys after `prefix`): the
    most probable class, its probability and every class's, rounded to DECIMALS."""
    row = np.asarray(probabilities, np.float64)
    top = int(np.argmax(row))
    return {f"{prefix}emotion": class_names[top],
            f"{prefix}probability": round(float(row[top]), DECIMALS),
            f"{prefix}probabilities": {name: round(float(p), DECIMALS)
                                       for name, p in zip(class_names, row, strict=True)}}
