"""tf.data input: the manifest check, training and evaluation datasets, augmentation.

Training data is sharded by FILE across input pipelines (one per worker), read interleaved,
shuffled, decoded in parallel, augmented per batch and prefetched. Evaluation data is read
whole by every pipeline, padded with zero-weight faces to a multiple of the global batch and
then split by record, so that every replica runs the same number of full batches: TPUs need
static shapes and multi-worker replicas must step together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import tensorflow as tf
from absl import logging

from beam_preprocess.record_format import (
    CHANNELS,
    IMAGE_ENCODING,
    SPLITS,
    Manifest,
    ManifestError,
    parse_example,
    read_manifest,
)

AUTOTUNE = tf.data.AUTOTUNE
# Random erasing (Zhong et al. 2017): rectangle area and aspect-ratio ranges.
ERASE_AREA = (0.02, 0.2)
ERASE_ASPECT = (0.3, 3.3)


class CorruptRecordError(RuntimeError):
    """A shard file holds a record that cannot be read or decoded."""


def load_manifest(data_dir: str, image_size: int | None = None) -> Manifest:
    """The manifest of `data_dir`, checked against what the trainer can read.

    Raises ManifestError if it is missing, of an unknown schema or encoding, lacks a split, or
    its image size differs from `image_size` (when given).
    """
    manifest = read_manifest(data_dir)
    where = f"{data_dir.rstrip('/')}/manifest.json"
    if manifest.encoding != IMAGE_ENCODING or manifest.channels != CHANNELS:
        raise ManifestError(f"{where}: records are {manifest.encoding} with "
                            f"{manifest.channels} channel(s); the trainer reads {IMAGE_ENCODING} "
                            f"with {CHANNELS}.")
    if image_size is not None and image_size != manifest.image_size:
        raise ManifestError(
            f"{where}: records are {manifest.image_size}x{manifest.image_size} but "
            f"--image_size={image_size}; omit --image_size to use the manifest's, or re-run "
            f"beam_preprocess with --image_size={image_size}.")
    for split in SPLITS:
        stats = manifest.splits.get(split)
        if stats is None or stats.records == 0 or not stats.files:
            raise ManifestError(f"{where}: split {split!r} has no records; the trainer needs "
                                f"all of {', '.join(SPLITS)}.")
        if len(stats.class_counts) != manifest.num_classes:
            raise ManifestError(f"{where}: split {split!r} has {len(stats.class_counts)} class "
                                f"counts for {manifest.num_classes} classes.")
    return manifest


@dataclasses.dataclass(frozen=True)
class Augmentation:
    rotation_degrees: float = 10.0
    shift_fraction: float = 0.1
    zoom_fraction: float = 0.1
    random_erasing: float = 0.0  # probability per face


def record_decoder(image_size: int, num_classes: int):
    def decode(serialized):
        parsed = parse_example(serialized, image_size)
        image, label = parsed["image"], tf.cast(parsed["label"], tf.int32)
        tf.debugging.assert_less(label, num_classes, message="label out of range")
        tf.debugging.assert_non_negative(label, message="label out of range")
        return image, label

    return decode


def _affine_transforms(batch: int, size: int, aug: Augmentation) -> tf.Tensor:
    """Per-face [batch, 8] projective transforms (output -> input pixel) of a random rotation
    about the centre, zoom and shift."""
    angle = tf.random.uniform([batch], -1.0, 1.0) * (aug.rotation_degrees * math.pi / 180.0)
    scale = 1.0 + tf.random.uniform([batch], -1.0, 1.0) * aug.zoom_fraction
    tx, ty = tf.unstack(tf.random.uniform([2, batch], -1.0, 1.0) * aug.shift_fraction * size)
    centre = (size - 1) / 2.0
    a0, a1 = tf.cos(angle) / scale, tf.sin(angle) / scale
    b0, b1 = -a1, a0
    a2 = centre - a0 * (centre + tx) - a1 * (centre + ty)
    b2 = centre - b0 * (centre + tx) - b1 * (centre + ty)
    zeros = tf.zeros([batch])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _random_erasing_mask(batch: int, size: int, probability: float) -> tf.Tensor:
    """[batch, size, size, 1] bool: one random rectangle in a `probability` share of faces."""
    area = tf.random.uniform([batch], *ERASE_AREA) * size * size
    aspect = tf.exp(tf.random.uniform([batch], math.log(ERASE_ASPECT[0]),
                                      math.log(ERASE_ASPECT[1])))
    height = tf.minimum(tf.sqrt(area * aspect), size)
    width = tf.minimum(tf.sqrt(area / aspect), size)
    top = tf.random.uniform([batch]) * (size - height)
    left = tf.random.uniform([batch]) * (size - width)
    coords = tf.range(size, dtype=tf.float32)
    rows = (coords[None, :] >= top[:, None]) & (coords[None, :] < (top + height)[:, None])
    cols = (coords[None, :] >= left[:, None]) & (coords[None, :] < (left + width)[:, None])
    chosen = tf.random.uniform([batch]) < probability
    mask = rows[:, :, None] & cols[:, None, :] & chosen[:, None, None]
    return mask[..., None]


def augment_batch(images: tf.Tensor, aug: Augmentation) -> tf.Tensor:
    """Random horizontal flip, rotation/shift/zoom and optional erasing of a batch of faces
    (any dtype, 0..255) -> float32 0..255."""
    images = tf.cast(images, tf.float32)
    batch, size = tf.shape(images)[0], images.shape[1]
    flip = tf.random.uniform([batch]) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    if aug.rotation_degrees or aug.shift_fraction or aug.zoom_fraction:
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=_affine_transforms(batch, size, aug),
            output_shape=[size, size], fill_value=0.0, interpolation="BILINEAR",
            fill_mode="REFLECT")
    if aug.random_erasing > 0:
        noise = tf.random.uniform(tf.shape(images), 0.0, 255.0)
        images = tf.where(_random_erasing_mask(batch, size, aug.random_erasing), noise, images)
    return tf.clip_by_value(images, 0.0, 255.0)


def train_dataset(files: list[str], image_size: int, num_classes: int,
                  per_replica_batch: int, input_context: tf.distribute.InputContext | None,
                  augmentation: Augmentation | None, shuffle_buffer: int,
                  seed: int) -> tf.data.Dataset:
    """Endless shuffled (float32 faces [B,S,S,1], int32 labels) batches for one input pipeline.

    `seed` should change when a job resumes, so that a restarted run does not replay the
    batches it already trained on.
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    file_names = tf.data.Dataset.from_tensor_slices(list(files))
    shard_records = num_pipelines > 1 and len(files) < num_pipelines
    if num_pipelines > 1 and not shard_records:
        file_names = file_names.shard(num_pipelines, pipeline_id)
    elif shard_records:
        logging.warning("%d train files for %d input pipelines: sharding by record instead "
                        "(every worker reads every file). Write more shards.", len(files),
                        num_pipelines)
    file_names = file_names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = file_names.repeat().interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 16), block_length=1,
        num_parallel_calls=AUTOTUNE, deterministic=False)
    if shard_records:
        records = records.shard(num_pipelines, pipeline_id)
    dataset = (records.shuffle(shuffle_buffer, seed=seed)
               .map(record_decoder(image_size, num_classes), num_parallel_calls=AUTOTUNE,
                    deterministic=False)
               .batch(per_replica_batch, drop_remainder=True))
    if augmentation is not None:
        dataset = dataset.map(lambda x, y: (augment_batch(x, augmentation), y),
                              num_parallel_calls=AUTOTUNE, deterministic=False)
    else:
        dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return dataset.prefetch(AUTOTUNE)


def eval_dataset(files: list[str], image_size: int, num_classes: int, num_records: int,
                 per_replica_batch: int, num_replicas: int,
                 input_context: tf.distribute.InputContext | None) -> tf.data.Dataset:
    """(uint8 faces, int32 labels, float32 weights) batches for one input pipeline: every
    record once, plus weight-0 padding so all replicas run the same number of full batches."""
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    global_batch = per_replica_batch * num_replicas
    padding = -num_records % global_batch
    records = tf.data.TFRecordDataset(list(files), num_parallel_reads=min(len(files), 8))
    faces = records.map(record_decoder(image_size, num_classes), num_parallel_calls=AUTOTUNE)
    faces = faces.map(lambda x, y: (x, y, tf.constant(1.0)))
    blank = (tf.zeros([image_size, image_size, CHANNELS], tf.uint8), tf.constant(0),
             tf.constant(0.0))
    faces = faces.concatenate(tf.data.Dataset.from_tensors(blank).repeat(padding))
    if num_pipelines > 1:
        faces = faces.shard(num_pipelines, pipeline_id)
    return faces.batch(per_replica_batch, drop_remainder=True).prefetch(AUTOTUNE)


def find_corrupt_record(files: list[str], image_size: int,
                        num_classes: int) -> tuple[str, int, str] | None:
    """(file, record index, error) of the first unreadable record in `files`, or None."""
    decode = record_decoder(image_size, num_classes)
    for path in files:
        index = 0
        try:
            for _ in tf.data.TFRecordDataset(path).map(decode):
                index += 1
        except tf.errors.OpError as e:
            return path, index, e.message.strip().splitlines()[0]
    return None


@contextlib.contextmanager
def naming_corrupt_files(files: list[str], image_size: int, num_classes: int):
    """Turns a data error raised by a running input pipeline into a CorruptRecordError naming
    the shard file and record (tf.data's own messages do not say which file)."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        found = find_corrupt_record(files, image_size, num_classes)
        if found is None:
            raise
        path, index, message = found
        raise CorruptRecordError(f"{path}: record {index} cannot be read ({message})") from e
