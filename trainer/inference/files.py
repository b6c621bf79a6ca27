"""Photo files, local or gs://: which paths are photos, reading them, writing PNGs."""

from __future__ import annotations

import dataclasses
import io
import posixpath
import warnings

import cv2
import numpy as np
import tensorflow as tf
from PIL import Image

from beam_preprocess.user_error import UserError, first_line

# What a directory argument expands to; a file named explicitly is tried whatever its name.
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class UnreadablePhotoError(UserError, ValueError):
    """A path that is missing, unreadable, or not an image OpenCV can decode."""


class UnwritableOutputError(UserError, OSError):
    """An output directory or file that cannot be created."""


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
        raise UnreadablePhotoError(f"{path}: cannot read ({first_line(e)})") from e
    return decode_photo(data, path)


@dataclasses.dataclass(frozen=True)
class PhotoLimits:
    """What a photo may be, decided from its header before any pixel is decoded."""

    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 40_000_000  # a 10 MB PNG can declare 30000x30000 pixels (2.7 GB decoded)
    max_aspect_ratio: float = 50.0  # a 2x40000 strip is no photo; detectors cannot resize it


class NotAnImageError(UnreadablePhotoError):
    """Bytes in no image format this project reads (the web demo answers a raw body 415)."""


class PhotoTooLargeError(UnreadablePhotoError):
    """A photo over PhotoLimits (the web demo answers 413)."""


def decode_photo(data: bytes, name: str, limits: PhotoLimits = PhotoLimits()) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, GIF, WebP, BMP, TIFF) as uint8 BGR [H, W, 3], upright by
    EXIF; `name` labels the errors. The header is read first (Pillow, no pixels): an unknown
    format, a bomb or an extreme shape is refused before anything is allocated for pixels."""
    width, height = _header_size(data, name, limits)
    if width * height > limits.max_pixels:
        raise PhotoTooLargeError(f"{name}: {width}x{height} pixels, more than "
                                 f"{limits.max_pixels:,}")
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        raise UnreadablePhotoError(f"{name}: {width}x{height} pixels is no photo (sides more "
                                   f"than {limits.max_aspect_ratio:g}:1)")
    # IMREAD_COLOR turns grey, 16-bit, palette and alpha images into 8-bit BGR and applies the
    # EXIF orientation; animated files give their first frame.
    photo = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if photo is None:
        raise UnreadablePhotoError(f"{name}: its image data cannot be decoded ({len(data)} "
                                   "bytes; truncated or corrupt?)")
    return photo


def _header_size(data: bytes, name: str, limits: PhotoLimits) -> tuple[int, int]:
    if not data:
        raise NotAnImageError(f"{name}: empty file (0 bytes)")
    if len(data) > limits.max_bytes:
        raise PhotoTooLargeError(f"{name}: {len(data):,} bytes, more than {limits.max_bytes:,}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb and corrupt-metadata warnings: sizes decide
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
    except Image.DecompressionBombError as error:
        raise PhotoTooLargeError(f"{name}: more than {limits.max_pixels:,} pixels ({error})"
                                 ) from None
    except (OSError, ValueError, SyntaxError) as error:  # Pillow's errors for what it cannot read
        raise NotAnImageError(f"{name}: not an image file ({len(data)} bytes: "
                              f"{first_line(error)})") from None
    if width < 1 or height < 1:
        raise UnreadablePhotoError(f"{name}: {width}x{height} pixels")
    return width, height


def make_output_dir(path: str) -> None:
    """Creates the output directory `path` (local or gs://) before any work is done."""
    try:
        tf.io.gfile.makedirs(path)
    except (OSError, tf.errors.OpError) as error:
        raise UnwritableOutputError(f"{path}: cannot create the output directory "
                                    f"({first_line(error)})") from None


def write_png(image: np.ndarray, path: str) -> None:
    """Writes a uint8 grey or BGR image to `path` (local or gs://) as PNG."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"PNG encoding failed for an image of shape {image.shape}")
    try:
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(encoded.tobytes())
    except (OSError, tf.errors.OpError) as error:
        raise UnwritableOutputError(f"{path}: cannot write it ({first_line(error)})") from None
