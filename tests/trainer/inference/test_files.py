"""trainer.inference.files.decode_photo, the one door every photo comes in by (trainer.predict,
launch predict, the web demo): limits from the header before any pixel, EXIF orientation,
colour modes, and no crash on any input."""

from __future__ import annotations

import io
import random
import resource
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image

from trainer.inference.files import (
    PhotoLimits,
    PhotoTooLargeError,
    UnreadablePhotoError,
    decode_photo,
)

HOPPER = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
HOPPER_BYTES = Path(HOPPER).read_bytes()


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (its data holds one row of zeros)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1))) + chunk(b"IEND", b""))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("side", [14000, 32768])
def test_a_decompression_bomb_is_refused_from_its_header(side):
    bomb = png_declaring(side, side)
    assert len(bomb) < 100_000
    before = peak_rss_mb()
    with pytest.raises(PhotoTooLargeError, match=rf"bomb.png: more than 40,000,000 pixels "
                       rf"\(Image size \({side * side} pixels\)"):
        decode_photo(bomb, "bomb.png")
    assert peak_rss_mb() - before < 200  # the 196 MB / 1 GB of pixels were never allocated


def test_a_long_strip_is_refused_and_small_photos_pass():
    with pytest.raises(UnreadablePhotoError, match=r"strip.png: 2x40000 pixels is no photo"):
        decode_photo(cv2.imencode(".png", np.zeros((40000, 2), np.uint8))[1].tobytes(),
                     "strip.png")
    tiny = decode_photo(cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes(), "1px")
    assert tiny.shape == (1, 1, 3)


@pytest.mark.parametrize("data, problem", [
    (b"", "empty file"),
    (b"not an image at all", "not an image file"),
    (HOPPER_BYTES[:200], ""),  # the header survives, the pixels do not
])
def test_empty_foreign_and_truncated_files_say_so(data, problem):
    with pytest.raises(UnreadablePhotoError, match=f"photo.jpg: {problem}"):
        decode_photo(data, "photo.jpg")


def test_limits_come_from_the_caller():
    data = HOPPER_BYTES
    with pytest.raises(PhotoTooLargeError, match="more than 100,000"):
        decode_photo(data, "hopper.jpg", PhotoLimits(max_pixels=100_000))
    with pytest.raises(PhotoTooLargeError, match="bytes, more than 1,000"):
        decode_photo(data, "hopper.jpg", PhotoLimits(max_bytes=1000))


@pytest.mark.parametrize("orientation, turn", [(6, Image.Transpose.ROTATE_90),
                                               (8, Image.Transpose.ROTATE_270),
                                               (3, Image.Transpose.ROTATE_180)])
def test_a_phone_photo_is_turned_upright_by_its_exif_orientation(orientation, turn):
    """A phone stores a portrait as landscape pixels plus an EXIF orientation."""
    upright = Image.open(HOPPER).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = encoded(upright.transpose(turn), "PNG")
    rotated = encoded(Image.open(io.BytesIO(stored)), "JPEG", quality=100, exif=exif)
    reference = decode_photo(encoded(upright, "JPEG", quality=100), "upright.jpg")
    photo = decode_photo(rotated, "phone.jpg")
    assert photo.shape == reference.shape
    assert np.abs(photo.astype(int) - reference).mean() < 2  # JPEG's own loss only
    lossless = encoded(Image.open(io.BytesIO(stored)), "PNG", exif=exif)
    # Without a lossy re-encoding, the very pixels of the upright photo: the same faces, boxes
    # and probabilities downstream.
    np.testing.assert_array_equal(decode_photo(lossless, "phone.png"),
                                  decode_photo(encoded(upright, "PNG"), "upright.png"))


def test_the_face_of_a_phone_portrait_is_found_only_because_it_is_turned_upright():
    from trainer.inference.faces import detection

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored = Image.open(HOPPER).convert("RGB").transpose(Image.Transpose.ROTATE_90)
    phone = encoded(stored, "JPEG", quality=95, exif=exif)
    as_stored = cv2.imdecode(np.frombuffer(phone, np.uint8),
                             cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert detection.detect(as_stored, detector="mtcnn") == []
    [face] = detection.detect(decode_photo(phone, "portrait.jpg"), detector="mtcnn")
    assert face.confidence > 0.95


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "RGB"])
def test_every_colour_mode_becomes_8_bit_bgr(mode):
    base = Image.open(HOPPER).convert("RGB").resize((120, 90))
    image = base.convert("I;16") if mode == "I;16" else base.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    photo = decode_photo(encoded(image, fmt), f"photo.{fmt.lower()}")
    assert photo.dtype == np.uint8 and photo.shape == (90, 120, 3)
    grey = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY).astype(int)
    expected = np.asarray(base.convert("L"), int)
    if mode != "I;16":  # Pillow's 16-bit conversion keeps values 0..255, i.e. a dark photo
        assert np.abs(grey - expected).mean() < 12


def test_an_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("white", "black")]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_photo(data, "anim.gif").mean() > 200


def test_fuzzed_inputs_never_crash_the_decoder():
    """Random bytes, truncations and mutated headers of real files: an image or
    UnreadablePhotoError, never another exception, with memory bounded."""
    rng = random.Random(0)
    hopper = Image.open(HOPPER).convert("RGB").resize((160, 120))
    seeds = [encoded(hopper, fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")]
    seeds.append(png_declaring(1, 5000))
    cases = decoded = 0
    before = peak_rss_mb()
    for _ in range(600):
        data = bytearray(rng.choice(seeds))
        how = rng.randrange(4)
        if how == 0:
            data = data[:rng.randrange(len(data))]
        elif how == 1:
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(min(64, len(data)))] = rng.randrange(256)
        elif how == 2:
            for _ in range(rng.randrange(1, 32)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            data = bytearray(rng.randbytes(rng.randrange(1, 4096)))
        cases += 1
        try:
            photo = decode_photo(bytes(data), "fuzz")
        except UnreadablePhotoError:
            continue
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
        decoded += 1
    print(f"{cases} fuzzed inputs: {decoded} decoded, {cases - decoded} refused")
    assert decoded > 0 and peak_rss_mb() - before < 300
