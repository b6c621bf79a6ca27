"""The trainer's input pipeline before the data path moved to the device, kept only as the
benchmarks' baseline: every epoch it PNG-decodes each record and augments it (flip, rotation,
shift, zoom) as float32 on the host, interleaving the shards record by record through a
2,048-record shuffle buffer.
"""

from __future__ import annotations

import math

import tensorflow as tf

from beam_preprocess.record_format import parse_example

AUTOTUNE = tf.data.AUTOTUNE


def _affine_transforms(batch, size: int, rotation=10.0, shift=0.1, zoom=0.1):
    angle = tf.random.uniform([batch], -1.0, 1.0) * (rotation * math.pi / 180.0)
    scale = 1.0 + tf.random.uniform([batch], -1.0, 1.0) * zoom
    tx, ty = tf.unstack(tf.random.uniform([2, batch], -1.0, 1.0) * shift * size)
    centre = (size - 1) / 2.0
    a0, a1 = tf.cos(angle) / scale, tf.sin(angle) / scale
    b0, b1 = -a1, a0
    a2 = centre - a0 * (centre + tx) - a1 * (centre + ty)
    b2 = centre - b0 * (centre + tx) - b1 * (centre + ty)
    zeros = tf.zeros([batch])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def host_augment(images):
    """Flip, rotation, shift and zoom of a batch on the host (float32 out)."""
    images = tf.cast(images, tf.float32)
    batch, size = tf.shape(images)[0], images.shape[1]
    flip = tf.random.uniform([batch]) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=_affine_transforms(batch, size), output_shape=[size, size],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    return tf.clip_by_value(images, 0.0, 255.0)


def previous_train_dataset(files, image_size: int, batch_size: int, augment: bool = True,
                           shuffle_buffer: int = 2048) -> tf.data.Dataset:
    def decode(serialized):
        parsed = parse_example(serialized, image_size)
        return parsed["image"], tf.cast(parsed["label"], tf.int32)

    records = tf.data.Dataset.from_tensor_slices(list(files)).shuffle(len(files)).repeat()
    records = records.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16),
                                 block_length=1, num_parallel_calls=AUTOTUNE,
                                 deterministic=False)
    dataset = (records.shuffle(shuffle_buffer)
               .map(decode, num_parallel_calls=AUTOTUNE, deterministic=False)
               .batch(batch_size, drop_remainder=True))
    transform = host_augment if augment else (lambda x: tf.cast(x, tf.float32))
    return dataset.map(lambda x, y: (transform(x), y), num_parallel_calls=AUTOTUNE,
                       deterministic=False).prefetch(AUTOTUNE)
