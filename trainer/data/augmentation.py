"""Augmentation on the device: batched, stateless, static-shape ops run inside the train step.

Training augmentation (`Augmentation.apply`) runs in each replica's step on its batch, after the
host has sent uint8 faces: nothing per face runs on the host. Every random draw is stateless,
keyed by (seed, global step, replica), so a resumed job continues the sequence of draws rather
than replaying it, and replicas (on every worker) draw differently. The ops are plain gathers,
arithmetic and comparisons, which XLA compiles for CPU, GPU and TPU (TensorFlow's
ImageProjectiveTransform and CropAndResize kernels have no XLA version).

Test-time augmentation (`TestTimeAugmentation`) averages the softmax of several views of each
face: itself and its mirror image (flip), or four corner crops and a centre crop and their
mirrors (ten_crop), each crop resized back to the face's side.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from beam_preprocess.record_format import resize_faces
from trainer.config import TTA_CHOICES, AugmentationConfig, EvaluationConfig

# Random erasing (Zhong et al. 2017): rectangle area and aspect-ratio ranges.
ERASE_AREA = (0.02, 0.2)
ERASE_ASPECT = (0.3, 3.3)
# One random algorithm, named rather than auto-selected. (XLA lays out the Philox stream in
# its own way: a step's draws are fixed for a given key in one mode, compiled or not, but the
# two modes draw differently.)
ALG = "philox"


def step_key(seed: int, step, replica_id) -> tf.Tensor:
    """The stateless key of one replica's draws at one global step."""
    key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64),
                                                   tf.cast(step, tf.int64), alg=ALG)
    return tf.random.experimental.stateless_fold_in(key, tf.cast(replica_id, tf.int64), alg=ALG)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """What training augmentation does; `apply` does it to a batch."""

    flip: bool = True
    rotation_degrees: float = 0.0
    shift_fraction: float = 0.0
    zoom_fraction: float = 0.0
    affine_probability: float = 1.0  # share of faces that get the rotation/shift/zoom
    crop_scale: float = 1.0  # random resized crop: smallest area share kept (1: off)
    random_erasing: float = 0.0  # probability per face
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    @classmethod
    def from_config(cls, config: AugmentationConfig) -> Augmentation | None:
        """The augmentation `config` asks for; None with --noaugment."""
        if not config.augment:
            return None
        return cls(True, config.rotation_degrees, config.shift_fraction, config.zoom_fraction,
                   config.affine_probability, config.crop_scale, config.random_erasing,
                   config.mixup_alpha, config.cutmix_alpha)

    @property
    def warps(self) -> bool:
        return bool(self.rotation_degrees or self.shift_fraction or self.zoom_fraction
                    or self.crop_scale < 1)

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def apply(self, images: tf.Tensor, targets: tf.Tensor,
              key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Faces [B,S,S,C] (0..255, any dtype) and targets [B,K] (class distributions) ->
        float32 augmented faces and the targets they now show (changed only by mixing)."""
        keys = tf.unstack(tf.random.experimental.stateless_split(key, 4, alg=ALG))
        images = tf.cast(images, tf.float32)
        if self.flip:
            images = random_flip(images, keys[0])
        if self.warps:
            images = warp(images, self._random_transforms(tf.shape(images)[0],
                                                          images.shape[1], keys[1]))
        if self.random_erasing > 0:
            images = random_erase(images, self.random_erasing, keys[2])
        if self.mixes:
            images, targets = self._mix(images, tf.cast(targets, tf.float32), keys[3])
        return tf.clip_by_value(images, 0.0, 255.0), targets

    def _random_transforms(self, batch, size: int, key) -> tf.Tensor:
        """[B, 6] affine maps (output pixel -> input pixel): crop, then rotation/zoom/shift
        on `affine_probability` of the faces."""
        k = tf.unstack(tf.random.experimental.stateless_split(key, 7, alg=ALG))
        angle = _uniform(k[0], batch, -1, 1) * (self.rotation_degrees * math.pi / 180.0)
        zoom = 1.0 + _uniform(k[1], batch, -1, 1) * self.zoom_fraction
        shift_x = _uniform(k[2], batch, -1, 1) * self.shift_fraction * size
        shift_y = _uniform(k[3], batch, -1, 1) * self.shift_fraction * size
        chosen = _uniform(k[4], batch, 0, 1) < self.affine_probability
        angle, shift_x, shift_y = (tf.where(chosen, v, 0.0) for v in (angle, shift_x, shift_y))
        zoom = tf.where(chosen, zoom, 1.0)
        # A crop of side `crop` at offset (cx, cy), resized to the face: input = crop * out + c.
        crop = tf.sqrt(_uniform(k[5], batch, self.crop_scale, 1.0))
        offset = _uniform(k[6], batch * 2, 0, 1) * tf.tile(1.0 - crop, [2]) * size
        crop_x, crop_y = offset[:batch], offset[batch:]
        centre = (size - 1) / 2.0
        cos, sin = tf.cos(angle) * crop / zoom, tf.sin(angle) * crop / zoom
        # Rotation/zoom about the centre and shift, then the crop's scale and offset.
        x0 = crop_x + centre * crop - cos * (centre + shift_x) - sin * (centre + shift_y)
        y0 = crop_y + centre * crop + sin * (centre + shift_x) - cos * (centre + shift_y)
        return tf.stack([cos, sin, x0, -sin, cos, y0], axis=1)

    def _mix(self, images, targets, key):
        """Mixup or CutMix of each face with another face of the batch (a coin decides per
        batch when both are on), targets mixed in the proportion of each face kept."""
        k = tf.unstack(tf.random.experimental.stateless_split(key, 5, alg=ALG))
        # A random pairing (argsort of uniform draws: XLA has no shuffle kernel).
        partner = tf.argsort(_uniform(k[0], tf.shape(images)[0], 0, 1))
        other_images, other_targets = tf.gather(images, partner), tf.gather(targets, partner)
        options = []
        if self.mixup_alpha > 0:
            share = _beta(k[1], self.mixup_alpha)
            options.append((share * images + (1 - share) * other_images, share))
        if self.cutmix_alpha > 0:
            options.append(_cutmix(images, other_images, _beta(k[2], self.cutmix_alpha), k[3]))
        (images, share), *rest = options
        if rest:
            use_second = _uniform(k[4], 1, 0, 1)[0] < 0.5
            images = tf.where(use_second, rest[0][0], images)
            share = tf.where(use_second, rest[0][1], share)
        return images, share * targets + (1 - share) * other_targets


def _uniform(key, count, low, high) -> tf.Tensor:
    return tf.random.stateless_uniform(tf.reshape(count, [1]), key, low, high, alg=ALG)


def _beta(key, alpha: float, iterations: int = 30) -> tf.Tensor:
    """One Beta(alpha, alpha) draw: the uniform draw's quantile, found by bisection of the
    regularized incomplete beta function (XLA has no gamma sampler, but has betainc)."""
    target = _uniform(key, 1, 0, 1)[0]
    low, high = tf.constant(0.0), tf.constant(1.0)
    for _ in range(iterations):
        middle = (low + high) / 2
        below = tf.math.betainc(alpha, alpha, middle) < target
        low, high = tf.where(below, middle, low), tf.where(below, high, middle)
    return (low + high) / 2


def random_flip(images: tf.Tensor, key) -> tf.Tensor:
    """Each face mirrored left-right with probability 1/2."""
    flip = _uniform(key, tf.shape(images)[0], 0, 1) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def _reflect(coordinate: tf.Tensor, size: int) -> tf.Tensor:
    """Coordinates outside [0, size-1] mirrored back in (half-sample symmetric, like
    fill_mode="reflect")."""
    period = 2.0 * size
    folded = tf.math.floormod(coordinate + 0.5, period)
    return tf.clip_by_value(tf.where(folded < size, folded, period - folded) - 0.5, 0.0,
                            size - 1.0)


def warp(images: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """Bilinear resampling of square faces [B,S,S,C] by affine maps [B,6] (a0 a1 a2 b0 b1 b2:
    input x = a0*x + a1*y + a2, input y = b0*x + b1*y + b2 of each output pixel x, y)."""
    batch, size, channels = tf.shape(images)[0], images.shape[1], images.shape[3]
    grid = tf.range(size, dtype=tf.float32)
    out_y, out_x = tf.meshgrid(grid, grid, indexing="ij")
    a = [tf.reshape(transforms[:, i], [-1, 1, 1]) for i in range(6)]
    in_x = _reflect(a[0] * out_x + a[1] * out_y + a[2], size)
    in_y = _reflect(a[3] * out_x + a[4] * out_y + a[5], size)
    x0, y0 = tf.floor(in_x), tf.floor(in_y)
    wx = tf.reshape(in_x - x0, [batch, -1, 1])
    wy = tf.reshape(in_y - y0, [batch, -1, 1])
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1, y1 = tf.minimum(x0 + 1, size - 1), tf.minimum(y0 + 1, size - 1)
    flat = tf.reshape(images, [batch, size * size, channels])

    def at(y, x):
        return tf.gather(flat, tf.reshape(y * size + x, [batch, -1]), batch_dims=1)

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return tf.reshape(top * (1 - wy) + bottom * wy, [batch, size, size, channels])


def _boxes_mask(size: int, top, left, height, width) -> tf.Tensor:
    """[B, S, S, 1] bool: the rectangle [top, top+height) x [left, left+width) of each face."""
    coords = tf.range(size, dtype=tf.float32)
    rows = (coords[None, :] >= top[:, None]) & (coords[None, :] < (top + height)[:, None])
    cols = (coords[None, :] >= left[:, None]) & (coords[None, :] < (left + width)[:, None])
    return (rows[:, :, None] & cols[:, None, :])[..., None]


def random_erase(images: tf.Tensor, probability: float, key) -> tf.Tensor:
    """One random rectangle of noise in a `probability` share of faces."""
    batch, size = tf.shape(images)[0], images.shape[1]
    k = tf.unstack(tf.random.experimental.stateless_split(key, 6, alg=ALG))
    area = _uniform(k[0], batch, *ERASE_AREA) * size * size
    aspect = tf.exp(_uniform(k[1], batch, math.log(ERASE_ASPECT[0]),
                             math.log(ERASE_ASPECT[1])))
    height = tf.minimum(tf.sqrt(area * aspect), size)
    width = tf.minimum(tf.sqrt(area / aspect), size)
    top = _uniform(k[2], batch, 0, 1) * (size - height)
    left = _uniform(k[3], batch, 0, 1) * (size - width)
    chosen = (_uniform(k[4], batch, 0, 1) < probability)[:, None, None, None]
    noise = tf.random.stateless_uniform(tf.shape(images), k[5], 0.0, 255.0, alg=ALG)
    return tf.where(_boxes_mask(size, top, left, height, width) & chosen, noise, images)


def _cutmix(images, other_images, share, key) -> tuple[tf.Tensor, tf.Tensor]:
    """`other_images` pasted into `images` in one box covering about 1 - share of the area;
    returns the images and the share of each face that is still its own."""
    batch, size = tf.shape(images)[0], images.shape[1]
    side = size * tf.sqrt(1.0 - share)
    corner = _uniform(key, 2, 0, 1) * (size - side)
    ones = tf.ones([batch])
    mask = _boxes_mask(size, corner[0] * ones, corner[1] * ones, side * ones, side * ones)
    pasted = tf.reduce_mean(tf.cast(mask[0], tf.float32))
    return tf.where(mask, other_images, images), 1.0 - pasted


@dataclasses.dataclass(frozen=True)
class TestTimeAugmentation:
    """Averaged softmax over test-time views of each face."""

    mode: str = "flip"
    crop_fraction: float = 0.875

    def __post_init__(self):
        if self.mode not in TTA_CHOICES:
            raise ValueError(f"TTA mode must be one of {TTA_CHOICES}, got {self.mode!r}")

    @classmethod
    def from_config(cls, config: EvaluationConfig) -> TestTimeAugmentation | None:
        """The final evaluation's views; None with --tta=none."""
        if config.tta == "none":
            return None
        return cls(config.tta, config.tta_crop_fraction)

    def views(self, images: tf.Tensor) -> list[tf.Tensor]:
        """The faces as each view shows them, all at the faces' own side and in their dtype
        (crops are resized back by record_format.resize_faces: grey levels again)."""
        if self.mode == "none":
            return [images]
        if self.mode == "flip":
            return [images, tf.reverse(images, axis=[2])]
        crops = ten_crop_views(images, self.crop_fraction)
        return crops + [tf.reverse(crop, axis=[2]) for crop in crops]

    def probabilities(self, logits_fn, images: tf.Tensor) -> tf.Tensor:
        views = self.views(images)
        total = tf.add_n([tf.nn.softmax(tf.cast(logits_fn(view), tf.float32))
                          for view in views])
        return total / len(views)


def ten_crop_views(images: tf.Tensor, fraction: float) -> list[tf.Tensor]:
    """The 4 corner crops and the centre crop of side `fraction` of the face, resized back
    with the project's one resize (so a view is a face of grey levels, as a record is)."""
    size = images.shape[1]
    side = max(1, round(size * fraction))
    far, middle = size - side, (size - side) // 2
    corners = [(0, 0), (0, far), (far, 0), (far, far), (middle, middle)]
    return [tf.cast(resize_faces(images[:, top:top + side, left:left + side, :], size),
                    images.dtype) for top, left in corners]
