"""Tiny preprocessed data directories for the trainer tests: TFRecord shards + manifest.json.

Written directly in the record format (record_format.serialize_example and resize_faces,
images.encode_png, as the Beam job does) so trainer tests need neither Beam nor a CSV. The faces
come from beam_preprocess.synthetic.draw_face: each class shows its expression.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from beam_preprocess.images import encode_png
from beam_preprocess.record_format import (
    FER2013_CLASS_NAMES,
    FERPLUS_CLASS_NAMES,
    SOURCE_IMAGE_SIZE,
    Manifest,
    ShardInfo,
    SplitStats,
    resize_faces,
    serialize_example,
    shard_filename,
)
from beam_preprocess.synthetic import draw_face

REPO_ROOT = Path(__file__).resolve().parents[2]


def draw_grating(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 48x48 uint8 stripe pattern whose stripe frequency is the class (2 to 11 cycles across,
    any orientation): an easy, texture-level class cue that flips and small rotations keep, and
    that even a randomly initialised backbone passes on to the head."""
    size = SOURCE_IMAGE_SIZE
    cycles = 2.0 + 1.5 * label + rng.uniform(-0.3, 0.3)
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    wave = np.sin(2 * np.pi * cycles / size * (x * np.cos(angle) + y * np.sin(angle))
                  + rng.uniform(0, 2 * np.pi))
    image = 128 + rng.uniform(-30, 30) + rng.uniform(40, 90) * wave
    image += rng.normal(0, 12, size=(size, size))
    return np.clip(image, 0, 255).round().astype(np.uint8)


def draw_lit_face(label: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic face (draw_face) whose overall brightness band is the class: a cue strong
    enough for a randomly initialised backbone to pass on to the head within a test's budget
    (the expressions alone need pretrained features or far longer training)."""
    face = draw_face(label, rng).astype(np.float64)
    return np.clip(20 + 30 * label + 0.3 * face, 0, 255).round().astype(np.uint8)


DRAWINGS = {"faces": draw_face, "gratings": draw_grating, "lit_faces": draw_lit_face}


def write_data_dir(data_dir, counts: dict[str, list[int]], *, image_size: int = 64,
                   num_shards: int = 2, seed: int = 0, drawing: str = "faces",
                   by_class: bool = False, votes: bool = False) -> Manifest:
    """Writes shards of every split in `counts` ({split: faces per class}) and the manifest.

    drawing: a DRAWINGS key. by_class: rows in class order (all of class 0 first, ...), given
    to the shards round robin, as a class-sorted CSV was by the first Beam job. votes: FER+
    style records with a label distribution (mostly the label's class, see vote_distribution).
    """
    import tensorflow as tf

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits, row_index = {}, 0
    for split, class_counts in counts.items():
        labels = np.repeat(np.arange(len(class_counts)), class_counts)
        if not by_class:
            rng.shuffle(labels)
        files = [shard_filename(split, i, num_shards) for i in range(num_shards)]
        writers = [tf.io.TFRecordWriter(str(data_dir / name)) for name in files]
        shard_records = [0] * num_shards
        faces = np.stack([DRAWINGS[drawing](int(label), rng) for label in labels])
        resized = resize_faces(faces[..., None], image_size).numpy()[..., 0]
        for i, (label, face) in enumerate(zip(labels, resized, strict=True)):
            distribution = vote_distribution(int(label), len(class_counts)) if votes else None
            writers[i % num_shards].write(serialize_example(encode_png(face), int(label),
                                                            row_index, distribution))
            shard_records[i % num_shards] += 1
            row_index += 1
        for writer in writers:
            writer.close()
        shards = [ShardInfo(name, records, *file_size_and_digest(data_dir / name))
                  for name, records in zip(files, shard_records, strict=True)]
        splits[split] = SplitStats(records=int(len(labels)), class_counts=list(class_counts),
                                   shards=shards)
    names = FERPLUS_CLASS_NAMES if votes else FER2013_CLASS_NAMES
    manifest = Manifest(image_size=image_size, label_set="ferplus" if votes else "fer2013",
                        class_names=list(names[:len(class_counts)]), splits=splits,
                        bad_rows=0, input_path="synthetic", label_distribution=votes)
    (data_dir / "manifest.json").write_text(manifest.to_json())
    return manifest


def vote_distribution(label: int, num_classes: int) -> np.ndarray:
    """Known synthetic votes: 70 % for the face's class, 30 % for the next class."""
    votes = np.zeros(num_classes, np.float32)
    votes[label] += 0.7
    votes[(label + 1) % num_classes] += 0.3
    return votes


def file_size_and_digest(path) -> tuple[int, str]:
    data = Path(path).read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def balanced_counts(per_class: int, num_classes: int = len(FER2013_CLASS_NAMES)) -> list[int]:
    return [per_class] * num_classes


def trainer_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", *args]


def trainer_env(**extra: str) -> dict[str, str]:
    """The environment of a trainer subprocess: quiet TF, no accelerators, no Vertex vars."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AIP_") and k not in ("CLOUD_ML_JOB_ID", "TF_CONFIG")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO_ROOT))
    env.update(extra)
    return env


def run_trainer(*args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(trainer_command(*args), cwd=REPO_ROOT, env=trainer_env(**env),
                          capture_output=True, text=True, timeout=timeout)


# Flags every test run shares: random weights, small batches. Backups at epoch ends only
# (the trainer's default here): a backup of the whole network costs seconds.
FAST_FLAGS = ("--weights=none", "--batch_size=8", "--dense_units=32", "--shuffle_buffer=64")
# For the tests that stop a job mid-epoch and resume it from a backup made mid-epoch.
MID_EPOCH_BACKUPS = "--backup_every_steps=2"
