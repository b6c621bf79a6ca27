"""Photo files, local or gs://: which paths are photos, reading them, writing PNGs."""

from __future__ import annotations

import posixpath

import cv2
import numpy as np
import tensorflow as tf

# What a directory argument expands to; a file named explicitly is tried whatever its name.
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class UnreadablePhotoError(ValueError):
    """A path that is missing, unreadable, or not an image OpenCV can decode."""


def expand_photo_paths(paths: list[str], extra_extensions: tuple[str, ...] = ()) -> list[str]:
    """Each directory in `paths` replaced by its photo files (and files ending in one of
    `extra_extensions`, e.g. videos), sorted, not recursive.

    Other paths are kept as given, even if they do not exist: reading them reports the problem.
    """
    extensions = PHOTO_EXTENSIONS + tuple(extra_extensions)
    expanded = []
    for path in paths:
        if tf.io.gfile.isdir(path):
            names = sorted(tf.io.gfile.listdir(path))
            expanded.extend(posixpath.join(path, name) for name in names
                            if name.lower().endswith(extensions))
        else:
            expanded.append(path)
    return expanded


def read_photo(path: str) -> np.ndarray:
    """The photo at `path` as uint8 BGR [H, W, 3], turned upright by its EXIF orientation."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except (tf.errors.OpError, OSError) as e:
        raise UnreadablePhotoError(f"{path}: cannot read ({_short(e)})") from e
    return decode_photo(data, path)


def decode_photo(data: bytes, name: str) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) as uint8 BGR [H, W, 3], upright by EXIF; `name`
    only labels the error."""
    # IMREAD_COLOR turns grey, 16-bit and alpha images into 8-bit BGR and applies EXIF rotation.
    photo = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if photo is None:
        raise UnreadablePhotoError(
            f"{name}: not an image OpenCV can decode ({len(data)} bytes)")
    return photo


def write_png(image: np.ndarray, path: str) -> None:
    """Writes a uint8 grey or BGR image to `path` (local or gs://) as PNG."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"PNG encoding failed for an image of shape {image.shape}")
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(encoded.tobytes())


def _short(error: Exception) -> str:
    return getattr(error, "message", None) or str(error) or type(error).__name__
