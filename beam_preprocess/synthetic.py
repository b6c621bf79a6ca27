"""Synthetic fer2013: procedurally drawn 48x48 faces in the exact fer2013.csv format.

The real data set cannot be downloaded here (Kaggle needs an account), so the demo and the
tests run on this stand-in. It keeps what the pipeline and the model depend on:

- the file format: header `emotion,pixels,Usage`, 2,304 space-separated grey levels per row,
  Usage blocks Training / PublicTest / PrivateTest in that order;
- the split sizes (28,709 / 3,589 / 3,589 of 35,887) and each split's class imbalance
  (happy ~25 %, disgust ~1.5 %), scaled to any row count; classes are shuffled within a split;
- faces whose expression is visible (mouth, brows, eyes differ by class) under random pose,
  lighting, hair and noise, so a network has to learn, and can.

Each face has an expression *intensity*: weak expressions drift towards neutral, so classes
overlap the way real ones do and accuracy does not saturate at once.

    python -m beam_preprocess.synthetic --rows 35887 --output gs://bucket/fer2013.csv --seed 0
"""

from __future__ import annotations

import dataclasses
import logging as std_logging
import math
import time
from collections.abc import Iterator

import cv2
import numpy as np
from absl import app, flags, logging

from beam_preprocess import absl_command
from beam_preprocess.record_format import (
    FER2013_CLASS_NAMES,
    SOURCE_IMAGE_SIZE,
    USAGE_TO_SPLIT,
)

CSV_HEADER = "emotion,pixels,Usage"

# fer2013.csv's rows per Usage and, within each, per class (FER2013_CLASS_NAMES order).
FER2013_CLASS_COUNTS = {
    "Training": (3995, 436, 4097, 7215, 4830, 3171, 4965),
    "PublicTest": (467, 56, 496, 895, 653, 415, 607),
    "PrivateTest": (491, 55, 528, 879, 594, 416, 626),
}
FER2013_ROWS = sum(sum(counts) for counts in FER2013_CLASS_COUNTS.values())  # 35,887

# Faces are drawn at twice the output size and shrunk, which anti-aliases the strokes.
_DRAW_SCALE = 2
_VISIBLE = SOURCE_IMAGE_SIZE * _DRAW_SCALE
# A margin of background around the visible square, so rotating and shifting pull in more
# scene instead of smeared border pixels.
_MARGIN = 16
_CANVAS = _VISIBLE + 2 * _MARGIN


@dataclasses.dataclass(frozen=True)
class Expression:
    """Where one expression moves the face away from neutral (all zeros), at full intensity.

    Units are fractions of the neutral feature size; signs: brow_raise > 0 lifts the brows,
    brow_inner_raise > 0 lifts their inner ends (worry) and < 0 lowers them (anger),
    eye_open scales the eye height, mouth_curve > 0 smiles, mouth_open opens the lips,
    mouth_width widens them, mouth_sneer lifts one corner, nose_wrinkle draws disgust lines.
    """

    brow_raise: float = 0.0
    brow_inner_raise: float = 0.0
    eye_open: float = 0.0
    mouth_curve: float = 0.0
    mouth_open: float = 0.0
    mouth_width: float = 0.0
    mouth_sneer: float = 0.0
    nose_wrinkle: float = 0.0


EXPRESSIONS = {
    "angry": Expression(brow_raise=-0.9, brow_inner_raise=-1.0, eye_open=-0.4,
                        mouth_curve=-0.35, mouth_width=-0.2),
    "disgust": Expression(brow_raise=-0.5, brow_inner_raise=-0.4, eye_open=-0.45,
                          mouth_curve=-0.3, mouth_open=0.15, mouth_sneer=1.0, nose_wrinkle=1.0),
    "fear": Expression(brow_raise=0.7, brow_inner_raise=0.8, eye_open=0.6,
                       mouth_curve=-0.3, mouth_open=0.45, mouth_width=0.35),
    "happy": Expression(brow_raise=0.1, eye_open=-0.25, mouth_curve=1.0, mouth_open=0.3,
                        mouth_width=0.3),
    "sad": Expression(brow_raise=-0.1, brow_inner_raise=0.9, eye_open=-0.25,
                      mouth_curve=-0.9, mouth_width=-0.1),
    "surprise": Expression(brow_raise=1.1, eye_open=0.7, mouth_open=1.0, mouth_width=-0.35),
    "neutral": Expression(),
}
assert tuple(EXPRESSIONS) == FER2013_CLASS_NAMES


def _point(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


def _draw_background_and_head(canvas: np.ndarray, rng: np.random.Generator,
                              skin: float) -> None:
    # The background differs from the skin enough that the head keeps an outline.
    canvas[:] = np.clip(skin + rng.choice((-1, 1)) * rng.uniform(25, 110), 10, 245)
    hair = float(np.clip(skin - rng.uniform(40, 140), 5, 255))
    cx, cy = _CANVAS / 2, _CANVAS / 2 + 4
    face_w, face_h = rng.uniform(29, 34), rng.uniform(37, 42)
    has_hair = rng.random() < 0.8
    if has_hair:  # hair mass behind and above the face
        cv2.ellipse(canvas, _point(cx, cy - 6), _point(face_w + 6, face_h + 6), 0, 0, 360,
                    hair, -1, cv2.LINE_AA)
    cv2.rectangle(canvas, _point(cx - 22, cy + 30), _point(cx + 22, _CANVAS), skin * 0.85, -1)
    cv2.ellipse(canvas, _point(cx, cy), _point(face_w, face_h), 0, 0, 360, skin, -1,
                cv2.LINE_AA)
    if has_hair and rng.random() < 0.7:  # fringe over the forehead
        fringe_depth = rng.uniform(6, 16)
        cv2.ellipse(canvas, _point(cx, cy - face_h + 4), _point(face_w + 1, fringe_depth),
                    0, 0, 180, hair, -1, cv2.LINE_AA)
        cv2.ellipse(canvas, _point(cx, cy - face_h + 4), _point(face_w + 1, fringe_depth * 0.6),
                    0, 180, 360, hair, -1, cv2.LINE_AA)


def _draw_eyes_and_brows(canvas: np.ndarray, rng: np.random.Generator, skin: float,
                         brow_raise: float, brow_inner_raise: float, eye_open: float) -> None:
    cx, eye_y = _CANVAS / 2, _CANVAS / 2 - 4 + rng.uniform(-2, 2)
    spacing, eye_w = rng.uniform(13, 16), rng.uniform(6.5, 8)
    eye_h = max(0.8, 4.2 * (1 + eye_open))
    dark = float(np.clip(skin - rng.uniform(90, 160), 0, 255))
    white = float(np.clip(skin + rng.uniform(20, 60), 0, 255))
    brow_gap, brow_len = 9.0 - 5.0 * brow_raise, rng.uniform(9, 12)
    brow_thickness = int(rng.integers(2, 5))
    for side in (-1, 1):
        ex = cx + side * spacing
        cv2.ellipse(canvas, _point(ex, eye_y), _point(eye_w, eye_h), 0, 0, 360, white, -1,
                    cv2.LINE_AA)
        iris = min(eye_h, 3.6)
        cv2.ellipse(canvas, _point(ex, eye_y), _point(iris, iris), 0, 0, 360, dark, -1,
                    cv2.LINE_AA)
        cv2.ellipse(canvas, _point(ex, eye_y), _point(eye_w, eye_h), 0, 180, 360, dark, 2,
                    cv2.LINE_AA)
        inner_x, outer_x = ex - side * brow_len * 0.55, ex + side * brow_len * 0.55
        inner_y = eye_y - eye_h - brow_gap - 6.0 * brow_inner_raise
        outer_y = eye_y - eye_h - brow_gap + 1.5 * brow_inner_raise
        mid = _point((inner_x + outer_x) / 2, (inner_y + outer_y) / 2 - 1.5)
        brow = np.array([_point(inner_x, inner_y), mid, _point(outer_x, outer_y)], np.int32)
        cv2.polylines(canvas, [brow], False, dark, brow_thickness, cv2.LINE_AA)


def _draw_nose(canvas: np.ndarray, rng: np.random.Generator, skin: float,
               nose_wrinkle: float) -> None:
    cx, cy = _CANVAS / 2, _CANVAS / 2 + 10
    shade = float(np.clip(skin - rng.uniform(30, 70), 0, 255))
    cv2.line(canvas, _point(cx - 4, cy + 2), _point(cx + 4, cy + 2), shade, 2, cv2.LINE_AA)
    cv2.line(canvas, _point(cx + 1, cy - 12), _point(cx + 3, cy), shade, 1, cv2.LINE_AA)
    if nose_wrinkle > 0.3:
        for k in range(1 + int(nose_wrinkle * 2.5)):
            y = cy - 8 - 3 * k
            cv2.line(canvas, _point(cx - 5, y + 2), _point(cx - 1, y), shade, 1, cv2.LINE_AA)
            cv2.line(canvas, _point(cx + 1, y), _point(cx + 5, y + 2), shade, 1, cv2.LINE_AA)


def _draw_mouth(canvas: np.ndarray, rng: np.random.Generator, skin: float, curve: float,
                opening: float, width: float, sneer: float) -> None:
    cx, cy = _CANVAS / 2, _CANVAS / 2 + 24 + rng.uniform(-2, 2)
    half_w = rng.uniform(10, 12.5) * (1 + width)
    lip = float(np.clip(skin - rng.uniform(50, 110), 0, 255))
    x = np.linspace(-1, 1, 13)
    sneer_side = 1 if rng.random() < 0.5 else -1
    # Smiles lift the corners (y is down), a sneer lifts one corner only.
    centre_line = cy + 6.0 * curve * (1 - x ** 2) - 4.0 * curve - 5.0 * sneer * np.clip(
        sneer_side * x, 0, None) ** 2
    gape = 12.0 * max(opening, 0.0) * np.sqrt(1 - x ** 2)
    upper = np.stack([cx + half_w * x, centre_line - 0.35 * gape], axis=1)
    lower = np.stack([cx + half_w * x, centre_line + 0.65 * gape], axis=1)
    if opening > 0.12:
        outline = np.concatenate([upper, lower[::-1]]).round().astype(np.int32)
        cv2.fillPoly(canvas, [outline], float(np.clip(lip - 40, 0, 255)), cv2.LINE_AA)
        cv2.polylines(canvas, [outline], True, lip, 2, cv2.LINE_AA)
    else:
        cv2.polylines(canvas, [upper.round().astype(np.int32)], False, lip, 3, cv2.LINE_AA)


def _pose_and_shrink(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        canvas = np.ascontiguousarray(canvas[:, ::-1])
    shift = rng.uniform(-3, 3, size=2) * _DRAW_SCALE
    matrix = cv2.getRotationMatrix2D((_CANVAS / 2, _CANVAS / 2), rng.normal(0, 7),
                                     rng.uniform(0.85, 1.12))
    matrix[:, 2] += shift - _MARGIN  # the output window is the visible square, jittered
    posed = cv2.warpAffine(canvas, matrix, (_VISIBLE, _VISIBLE), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    return cv2.resize(posed, (SOURCE_IMAGE_SIZE, SOURCE_IMAGE_SIZE), interpolation=cv2.INTER_AREA)


def _light_and_noise(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = SOURCE_IMAGE_SIZE
    direction = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(direction) * (np.arange(size)[None, :] - size / 2)
            + np.sin(direction) * (np.arange(size)[:, None] - size / 2)) / size
    contrast = rng.uniform(0.55, 1.2)
    lit = (face - 128.0) * contrast + 128.0 + rng.uniform(-35, 35) + rng.uniform(0, 70) * ramp
    if rng.random() < 0.3:
        lit = cv2.GaussianBlur(lit, (3, 3), 0)
    lit += rng.normal(0, rng.uniform(2, 12), size=lit.shape)
    return np.clip(lit, 0, 255).round().astype(np.uint8)


def draw_face(emotion: int, rng: np.random.Generator) -> np.ndarray:
    """One random 48x48 uint8 grey face showing `emotion` (an index into FER2013_CLASS_NAMES)."""
    if not 0 <= emotion < len(FER2013_CLASS_NAMES):
        raise ValueError(f"emotion must be 0..{len(FER2013_CLASS_NAMES) - 1}, got {emotion}")
    expression = EXPRESSIONS[FER2013_CLASS_NAMES[emotion]]
    intensity = rng.uniform(0.3, 1.1)

    def feature(name: str, jitter: float) -> float:
        return intensity * getattr(expression, name) + rng.normal(0, jitter)

    canvas = np.empty((_CANVAS, _CANVAS), np.float32)
    skin = rng.uniform(90, 215)
    _draw_background_and_head(canvas, rng, skin)
    _draw_eyes_and_brows(canvas, rng, skin, feature("brow_raise", 0.15),
                         feature("brow_inner_raise", 0.15), feature("eye_open", 0.12))
    _draw_nose(canvas, rng, skin, feature("nose_wrinkle", 0.1))
    _draw_mouth(canvas, rng, skin, feature("mouth_curve", 0.15), feature("mouth_open", 0.08),
                feature("mouth_width", 0.08), max(0.0, feature("mouth_sneer", 0.1)))
    return _light_and_noise(_pose_and_shrink(canvas, rng), rng)


def _largest_remainder(total: int, weights: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """Integer parts of `total` proportional to `weights`, summing exactly to `total`."""
    weights = np.asarray(weights, dtype=np.float64)
    quotas = total * weights / weights.sum()
    counts = np.floor(quotas).astype(np.int64)
    # Ties go to the earlier entry, so the result does not depend on float noise.
    order = np.lexsort((np.arange(len(quotas)), -(quotas - counts)))
    counts[order[: total - counts.sum()]] += 1
    return counts


def split_class_counts(num_rows: int) -> dict[str, list[int]]:
    """Rows per Usage and class for a synthetic file of `num_rows` rows.

    Keyed by Usage in file order, lists in FER2013_CLASS_NAMES order: fer2013's split sizes and
    per-split class imbalance scaled to `num_rows` (exactly fer2013's counts at 35,887). Every
    class gets at least one row in every split that has >= 7 rows (num_rows >= 70), so rare
    disgust is always present; in such tiny splits that row is taken from the largest class.
    """
    if num_rows < 0:
        raise ValueError(f"num_rows must be >= 0, got {num_rows}")
    split_sizes = _largest_remainder(
        num_rows, [sum(counts) for counts in FER2013_CLASS_COUNTS.values()])
    result = {}
    for usage, split_size in zip(FER2013_CLASS_COUNTS, split_sizes, strict=True):
        counts = _largest_remainder(int(split_size), FER2013_CLASS_COUNTS[usage])
        if split_size >= len(counts):
            for missing in np.flatnonzero(counts == 0):
                counts[np.argmax(counts)] -= 1
                counts[missing] += 1
        result[usage] = counts.tolist()
    return result


def generate_rows(num_rows: int, seed: int = 0) -> Iterator[tuple[int, np.ndarray, str]]:
    """Yields (emotion, 48x48 uint8 face, Usage) for each row of a synthetic fer2013.csv.

    Rows come in file order: all Training, then PublicTest, then PrivateTest, with classes in
    random order within each. Deterministic for a given (num_rows, seed); memory stays flat.
    """
    counts_by_usage = split_class_counts(num_rows)  # validates now, not at the first next()
    return _rows(counts_by_usage, np.random.default_rng(seed))


def _rows(counts_by_usage: dict[str, list[int]],
          rng: np.random.Generator) -> Iterator[tuple[int, np.ndarray, str]]:
    for usage, counts in counts_by_usage.items():
        remaining = np.array(counts, dtype=np.int64)
        while remaining.sum():
            # Drawing without replacement, one row at a time: a uniform shuffle of the split's
            # labels that never holds them all.
            emotion = int(np.searchsorted(np.cumsum(remaining), rng.integers(remaining.sum()),
                                          side="right"))
            remaining[emotion] -= 1
            yield emotion, draw_face(emotion, rng), usage


def format_row(emotion: int, face: np.ndarray, usage: str) -> str:
    """One fer2013.csv line (without line end)."""
    return f"{emotion},{' '.join(map(str, face.ravel().tolist()))},{usage}"


def write_csv(path: str, num_rows: int, seed: int = 0) -> dict[str, list[int]]:
    """Writes a synthetic fer2013.csv to `path` (local or gs://; `.gz` paths are gzipped).

    Returns the class counts per split, keyed like record_format.SPLITS (train / validation /
    test) with lists in FER2013_CLASS_NAMES order, i.e. what the preprocessing manifest should
    report for this file.
    """
    from apache_beam.io.filesystems import FileSystems

    rows = generate_rows(num_rows, seed)
    lines_per_write = 256
    with FileSystems.create(path, mime_type="text/csv") as out:
        out.write((CSV_HEADER + "\n").encode())
        batch = []
        for row in rows:
            batch.append(format_row(*row))
            if len(batch) == lines_per_write:
                out.write(("\n".join(batch) + "\n").encode())
                batch.clear()
        if batch:
            out.write(("\n".join(batch) + "\n").encode())
    return {USAGE_TO_SPLIT[usage]: counts
            for usage, counts in split_class_counts(num_rows).items()}


def _define_flags() -> None:
    flags.DEFINE_integer("rows", None,
                         f"Number of data rows ({FER2013_ROWS} = the size of fer2013).",
                         lower_bound=0)
    flags.DEFINE_string("output", None, "CSV path to write, local or gs:// (.gz is gzipped).")
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed and rows give the same file.")
    flags.mark_flags_as_required(["rows", "output"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    flag_values = flags.FLAGS
    # "time LEVEL message", as the other commands print (absl's default adds thread ids).
    logging.get_absl_handler().setFormatter(
        std_logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    start = time.perf_counter()
    counts = write_csv(flag_values.output, flag_values.rows, flag_values.seed)
    seconds = time.perf_counter() - start
    logging.info("Wrote %d rows to %s in %.1f s (%.0f rows/s).", flag_values.rows,
                 flag_values.output, seconds, flag_values.rows / max(seconds, 1e-9))
    for split, split_counts in counts.items():
        logging.info("%s: %s", split, dict(zip(FER2013_CLASS_NAMES, split_counts, strict=True)))


if __name__ == "__main__":
    _define_flags()
    absl_command.run(main)
