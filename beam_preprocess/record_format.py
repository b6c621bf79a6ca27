"""The record format shared by the preprocessing job (writer) and the trainer (reader).

Everything both sides must agree on lives here and only here: feature keys and dtypes,
image encoding, the one resize implementation, class names, split names, shard file names and
the manifest.

One tf.train.Example per face:
  image               bytes    a PNG of the face, grey (1 channel), image_size^2, uint8
  label               int64    index into the manifest's class_names (FER+: the majority vote)
  row_index           int64    0-based data-row index in the source CSV (line number minus 2)
  label_distribution  float32  [num_classes], only when the manifest says
                               `label_distribution: true` (FER+): each class's share of the
                               votes, summing to 1

Why PNG with one channel (measured on this project's 2-core CPU, see docs/preprocessing.md
"Record format"):
a 224x224 face upsampled from 48x48 is 50,176 B raw; PNG (zlib level 1) is ~19 kB, lossless,
cheap to decode, and carries its own shape, so a size mismatch cannot be read silently. Three
channels would only repeat the grey values; the model turns grey into three inside its graph.

`resize_faces` is the only resize of the project: the Beam job makes 224 px records with it,
and the model's preprocessing stage and every export resize with it too, so a face served as
raw 48x48 pixels reaches the network as the very numbers training saw.

This module must stay importable without Apache Beam and without TensorFlow: the trainer's flag
parsing and the Beam workers import it; TensorFlow is imported inside the functions that use it.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Any

from beam_preprocess.user_error import UserError

SCHEMA_VERSION = 2

IMAGE_KEY = "image"
LABEL_KEY = "label"
ROW_INDEX_KEY = "row_index"
LABEL_DISTRIBUTION_KEY = "label_distribution"

IMAGE_ENCODING = "png"
CHANNELS = 1
DEFAULT_IMAGE_SIZE = 224
SOURCE_IMAGE_SIZE = 48
RESIZE_METHOD = ("tf.image.resize bilinear (half-pixel centres, no antialiasing), rounded to "
                 "uint8: record_format.resize_faces")

SPLITS = ("train", "validation", "test")
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}

FER2013_CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS_CLASS_NAMES = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)
CLASS_NAMES_BY_LABEL_SET = {"fer2013": FER2013_CLASS_NAMES, "ferplus": FERPLUS_CLASS_NAMES}

MANIFEST_FILENAME = "manifest.json"
SYNTHETIC_MARK = "synthetic"  # in a data set's name: its faces are drawn, not photographed
BAD_ROWS_FILENAME = "bad_rows.jsonl"
CLASS_DISTRIBUTION_FILENAME = "class_distribution.png"
SHARD_SUFFIX = ".tfrecord"


def shard_filename(split: str, shard_index: int, num_shards: int) -> str:
    """`train-00003-of-00008.tfrecord`: the name of one shard file, relative to output_dir."""
    return f"{split}-{shard_index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def resize_faces(faces, size: int):
    """uint8 faces [N, H, W, 1] (H == W, any size) -> uint8 [N, size, size, 1].

    Bilinear with half-pixel centres, then rounded: the one resize implementation used by the
    Beam job, the model's preprocessing stage and the exports. Works in graphs and eagerly.
    """
    import tensorflow as tf

    faces = tf.convert_to_tensor(faces)
    if faces.shape[1] == size and faces.shape[2] == size:
        return tf.cast(faces, tf.uint8) if faces.dtype != tf.uint8 else faces
    resized = tf.image.resize(tf.cast(faces, tf.float32), [size, size], method="bilinear",
                              antialias=False)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def feature_spec(num_classes: int, label_distribution: bool) -> dict[str, Any]:
    """The tf.io.parse_example spec of a record."""
    import tensorflow as tf

    spec = {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        ROW_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    if label_distribution:
        spec[LABEL_DISTRIBUTION_KEY] = tf.io.FixedLenFeature([num_classes], tf.float32)
    return spec


def serialize_example(png_bytes: bytes, label: int, row_index: int,
                      label_distribution=None) -> bytes:
    """One face as a serialized tf.train.Example."""
    import tensorflow as tf

    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png_bytes])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        ROW_INDEX_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[row_index])),
    }
    if label_distribution is not None:
        feature[LABEL_DISTRIBUTION_KEY] = tf.train.Feature(
            float_list=tf.train.FloatList(value=[float(p) for p in label_distribution]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Map fields serialize in hash order, which differs between processes; re-runs must not.
    return example.SerializeToString(deterministic=True)


def decode_image(png, image_size: int):
    """Graph-mode PNG -> uint8 [S, S, 1], its shape checked against `image_size` so that
    records written at another size fail here instead of being silently resized."""
    import tensorflow as tf

    image = tf.io.decode_png(png, channels=CHANNELS, dtype=tf.uint8)
    return tf.ensure_shape(image, [image_size, image_size, CHANNELS])


def parse_example(serialized, image_size: int, num_classes: int = 0,
                  label_distribution: bool = False) -> dict:
    """Graph-mode parse of one record: {image uint8 [S,S,1], label, row_index[, distribution]}."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec(num_classes,
                                                                 label_distribution))
    parsed[IMAGE_KEY] = decode_image(parsed[IMAGE_KEY], image_size)
    return parsed


def dataset_name_of(input_path: str) -> str:
    """A data set's default name: its input file's name without extension."""
    return posixpath.splitext(posixpath.basename(input_path.rstrip("/")))[0]


class ManifestError(UserError, ValueError):
    """The manifest is missing, unreadable, or does not match what the reader expects."""


@dataclasses.dataclass
class ShardInfo:
    """One shard file as written: its name (relative to output_dir), size and content hash."""

    name: str
    records: int
    bytes: int
    sha256: str


@dataclasses.dataclass
class SplitStats:
    records: int
    class_counts: list[int]
    shards: list[ShardInfo]

    @property
    def files(self) -> list[str]:
        return [shard.name for shard in self.shards]


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
    resize: str = RESIZE_METHOD
    label_distribution: bool = False
    dropped_rows: int = 0
    # Seed of the hash that assigns rows to shards and orders them (beam_preprocess --shard_seed).
    shard_seed: int = 0
    statistics: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The data set's name (beam_preprocess --dataset_name; by default the input file's stem).
    # A name containing "synthetic" marks synthetic faces: models trained on them say so.
    dataset: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def dataset_name(self) -> str:
        """`dataset`, or the input file's stem for manifests written before it was recorded."""
        return self.dataset or dataset_name_of(self.input_path)

    @property
    def synthetic(self) -> bool:
        return SYNTHETIC_MARK in self.dataset_name.lower()

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
            data["splits"] = {
                name: SplitStats(records=s["records"], class_counts=s["class_counts"],
                                 shards=[ShardInfo(**shard) for shard in s["shards"]])
                for name, s in data["splits"].items()}
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
