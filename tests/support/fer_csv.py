"""Writing fer2013-format CSV text in the variants found in the wild, for tests."""

from __future__ import annotations

import cv2
import numpy as np

STANDARD_HEADER = ("emotion", "pixels", "Usage")
ICML_HEADER = ("emotion", " Usage", " pixels")  # icml_face_data.csv: leading spaces, other order


def random_faces(num_rows: int, seed: int = 0,
                 usages: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")):
    """(emotion, 48x48 uint8 face, usage) rows, Usage blocks in file order like fer2013.

    Faces are smoothed noise: like photos they have little energy at the pixel scale, so a
    resize round trip must come back close.
    """
    rng = np.random.default_rng(seed)
    per_usage = np.array_split(np.arange(num_rows), len(usages))
    rows = []
    for usage, indices in zip(usages, per_usage, strict=True):
        for _ in indices:
            noise = rng.integers(0, 256, (48, 48), dtype=np.uint8)
            rows.append((int(rng.integers(0, 7)), cv2.GaussianBlur(noise, (0, 0), 2.0), usage))
    return rows


def csv_text(rows, header=STANDARD_HEADER, quote_pixels=False, line_end="\n", bom=False,
             extra_lines=()) -> str:
    """The file's text; `extra_lines` (raw strings) are appended as further data lines."""
    def field(name, emotion, face, usage):
        name = name.strip()
        if name == "emotion":
            return str(emotion)
        if name == "Usage":
            return usage
        pixels = " ".join(map(str, face.reshape(-1)))
        return f'"{pixels}"' if quote_pixels else pixels

    lines = [",".join(header)]
    lines += [",".join(field(n, *row) for n in header) for row in rows]
    lines += list(extra_lines)
    return ("\ufeff" if bom else "") + line_end.join(lines) + line_end


def write_csv(path, rows, **variant) -> str:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(csv_text(rows, **variant))
    return str(path)
