"""The record format shared by the preprocessing job (writer) and the trainer (reader).

Everything both sides must agree on lives here and only here: feature keys and dtypes,
image encoding, class names, split names, shard file names and the manifest.

One tf.train.Example per face:
  image      bytes  a PNG of the face, grayscale (1 channel), IMAGE_SIZE x IMAGE_SIZE, uint8
  label      int64  index into the manifest's class_names
  row_index  int64  0-based data-row index in the source CSV (line number minus 2)

Why PNG with one channel (measured on this project's 2-core CPU, see README "Record format"):
a 224x224 face upsampled from 48x48 is 50,176 B raw; PNG (zlib level 1) is ~22 kB, costs
~0.8 ms to encode in Beam and ~0.3 ms to decode in tf.data, is lossless, and carries its own
shape, so a size mismatch cannot be read silently. Three channels would only repeat the grey
values; the model turns grey into RGB inside its graph.

This module must stay importable without Apache Beam: the trainer imports it.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Any

SCHEMA_VERSION = 1

IMAGE_KEY = "image"
LABEL_KEY = "label"
ROW_INDEX_KEY = "row_index"

IMAGE_ENCODING = "png"
CHANNELS = 1
DEFAULT_IMAGE_SIZE = 224
SOURCE_IMAGE_SIZE = 48
RESIZE_INTERPOLATION = "bilinear (OpenCV INTER_LINEAR, half-pixel centres)"

SPLITS = ("train", "validation", "test")
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}

FER2013_CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS_CLASS_NAMES = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)
CLASS_NAMES_BY_LABEL_SET = {"fer2013": FER2013_CLASS_NAMES, "ferplus": FERPLUS_CLASS_NAMES}

MANIFEST_FILENAME = "manifest.json"
BAD_ROWS_FILENAME = "bad_rows.jsonl"
CLASS_DISTRIBUTION_FILENAME = "class_distribution.png"
SHARD_SUFFIX = ".tfrecord"


def shard_filename(split: str, shard_index: int, num_shards: int) -> str:
    """`train-00003-of-00008.tfrecord`: the name of one shard file, relative to output_dir."""
    return f"{split}-{shard_index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def feature_spec() -> dict[str, Any]:
    """The tf.io.parse_single_example spec of a record."""
    import tensorflow as tf

    return {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        ROW_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64),
    }


def serialize_example(png_bytes: bytes, label: int, row_index: int) -> bytes:
    """One face as a serialized tf.train.Example."""
    import tensorflow as tf

    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png_bytes])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        ROW_INDEX_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[row_index])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Map fields serialize in hash order, which differs between processes; re-runs must not.
    return example.SerializeToString(deterministic=True)


def parse_example(serialized, image_size: int):
    """Graph-mode parse of one serialized record: (uint8 image [S, S, 1], int64 label, row_index).

    The decoded PNG's shape is checked against `image_size`, so records written at another size
    fail here instead of being silently resized.
    """
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec())
    image = tf.io.decode_png(parsed[IMAGE_KEY], channels=CHANNELS, dtype=tf.uint8)
    image = tf.ensure_shape(image, [image_size, image_size, CHANNELS])
    return image, parsed[LABEL_KEY], parsed[ROW_INDEX_KEY]


class ManifestError(ValueError):
    """The manifest is missing, unreadable, or does not match what the reader expects."""


@dataclasses.dataclass
class SplitStats:
    records: int
    class_counts: list[int]
    files: list[str]


@dataclasses.dataclass
class Manifest:
    """What a finished preprocessing run wrote. Written last: its presence means complete."""

    image_size: int
    label_set: str
    class_names: list[str]
    splits: dict[str, SplitStats]
    bad_rows: int
    input_path: str
    schema_version: int = SCHEMA_VERSION
    channels: int = CHANNELS
    encoding: str = IMAGE_ENCODING
    interpolation: str = RESIZE_INTERPOLATION
    dropped_rows: int = 0
    statistics: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_files(self, split: str, output_dir: str) -> list[str]:
        """Absolute paths of a split's shard files (the manifest stores names relative to it)."""
        return [posixpath.join(output_dir, name) for name in self.splits[split].files]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{source}: not valid JSON ({e})") from e
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"{source}: schema_version {version!r} is not supported (this code reads "
                f"version {SCHEMA_VERSION}); re-run beam_preprocess with this version."
            )
        try:
            data["splits"] = {name: SplitStats(**s) for name, s in data["splits"].items()}
            return cls(**data)
        except (KeyError, TypeError) as e:
            raise ManifestError(f"{source}: malformed manifest ({e})") from e


def read_manifest(output_dir: str) -> Manifest:
    """Reads `<output_dir>/manifest.json` (local or gs://) with a clear error when absent."""
    import tensorflow as tf

    path = posixpath.join(output_dir, MANIFEST_FILENAME)
    if not tf.io.gfile.exists(path):
        raise ManifestError(
            f"{path} not found: {output_dir} is not the output of a finished beam_preprocess run "
            "(the manifest is written last, so a failed or running job has none)."
        )
    with tf.io.gfile.GFile(path, "r") as f:
        return Manifest.from_json(f.read(), source=path)
