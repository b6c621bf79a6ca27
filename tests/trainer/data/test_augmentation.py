"""Device augmentation: batched, stateless, XLA-compilable; and test-time views."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer.data.augmentation import (
    Augmentation,
    step_key,
    ten_crop_views,
    warp,
)
from trainer.data.augmentation import TestTimeAugmentation as Tta  # pytest: not a test class

SIZE = 32
FLIP_ONLY = Augmentation(flip=True)
GEOMETRIC = Augmentation(True, rotation_degrees=15.0, shift_fraction=0.1, zoom_fraction=0.1)


def faces(count=8, seed=1):
    return tf.random.stateless_uniform([count, SIZE, SIZE, 1], [seed, 0], 0, 255)


def targets(count=8):
    return tf.one_hot(tf.range(count) % 7, 7)


def key(step=0, replica=0):
    return step_key(0, step, replica)


def test_flip_only_augmentation_mirrors_or_keeps_each_face():
    x = faces(16)
    out, same_targets = FLIP_ONLY.apply(x, targets(16), key())
    for face, result in zip(x.numpy(), out.numpy(), strict=True):
        assert np.allclose(result, face) or np.allclose(result, face[:, ::-1])
    assert not all(np.allclose(r, f) for r, f in zip(out.numpy(), x.numpy(), strict=True))
    np.testing.assert_array_equal(same_targets, targets(16))


def test_draws_are_fixed_by_seed_step_and_replica():
    x = faces()
    first, _ = GEOMETRIC.apply(x, targets(), key(step=3, replica=1))
    again, _ = GEOMETRIC.apply(x, targets(), key(step=3, replica=1))
    np.testing.assert_array_equal(first, again)
    for other in (key(step=4, replica=1), key(step=3, replica=0), step_key(1, 3, 1)):
        assert not np.allclose(GEOMETRIC.apply(x, targets(), other)[0], first)


def test_the_identity_and_a_quarter_turn_warp_exactly():
    x = faces(2)
    identity = tf.constant([[1.0, 0, 0, 0, 1.0, 0]] * 2)
    np.testing.assert_allclose(warp(x, identity), x, atol=1e-4)
    # Output pixel (x, y) reads input (y, S-1-x): the face turned a quarter.
    quarter = tf.constant([[0.0, 1.0, 0.0, -1.0, 0.0, SIZE - 1.0]] * 2)
    np.testing.assert_allclose(warp(x, quarter)[..., 0], np.rot90(x.numpy()[..., 0], -1,
                                                                   axes=(1, 2)), atol=1e-3)


def test_geometric_augmentation_moves_pixels_but_keeps_the_range():
    x = faces()
    out = GEOMETRIC.apply(x, targets(), key())[0].numpy()
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert all(not (np.allclose(r, f, atol=1) or np.allclose(r, f[:, ::-1], atol=1))
               for r, f in zip(out, x.numpy(), strict=True))
    cropped = Augmentation(False, crop_scale=0.5).apply(x, targets(), key())[0]
    assert not np.allclose(cropped, x, atol=1)


def test_affine_probability_leaves_the_other_faces_alone():
    x = faces(32)
    out = Augmentation(False, rotation_degrees=20.0, affine_probability=0.5).apply(
        x, targets(32), key())[0].numpy()
    untouched = [np.allclose(r, f, atol=1e-3) for r, f in zip(out, x.numpy(), strict=True)]
    assert 4 < sum(untouched) < 28


def test_random_erasing_replaces_one_rectangle_per_face():
    flat = tf.fill([8, SIZE, SIZE, 1], 128.0)
    out = Augmentation(False, random_erasing=1.0).apply(flat, targets(), key())[0].numpy()
    for face in out[..., 0]:
        rows, cols = np.nonzero(face != 128.0)
        assert rows.size > 0
        box = face[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert (box != 128.0).mean() > 0.95  # a filled rectangle, not scattered pixels


def labelled_flat_faces(count=8):
    """Face i is all grey level 20 * i + 10, and its target is class i alone."""
    values = 20.0 * tf.range(count, dtype=tf.float32) + 10.0
    return values[:, None, None, None] * tf.ones([count, SIZE, SIZE, 1]), tf.eye(count)


def test_mixup_mixes_faces_and_targets_in_the_same_proportion():
    x, t = labelled_flat_faces()
    out, mixed = Augmentation(False, mixup_alpha=0.4).apply(x, t, key())
    np.testing.assert_allclose(tf.reduce_sum(mixed, axis=1), 1.0, atol=1e-6)
    values = 20.0 * np.arange(8) + 10.0
    # Each face is the mixture its target says: sum over classes of share x that face.
    np.testing.assert_allclose(out.numpy()[:, 0, 0, 0], mixed.numpy() @ values, atol=1e-3)
    assert np.all(np.ptp(out.numpy(), axis=(1, 2, 3)) < 1e-3)  # mixed evenly, no patches
    assert not np.allclose(mixed, t)


def test_cutmix_targets_are_the_share_of_each_face_shown():
    x, t = labelled_flat_faces()
    out, mixed = Augmentation(False, cutmix_alpha=1.0).apply(x, t, key(step=2))
    values = 20.0 * np.arange(8) + 10.0
    for face, target in zip(out.numpy(), mixed.numpy(), strict=True):
        shown = np.array([np.mean(np.isclose(face, v)) for v in values])
        np.testing.assert_allclose(shown, target, atol=1e-6)
    assert not np.allclose(mixed, t)


def test_augmentation_compiles_with_xla_and_stays_keyed():
    """Every op has an XLA kernel (TPUs need it). XLA's Philox stream differs from the plain
    kernels', so the check is that compiled draws are fixed by the key, not equal to eager."""
    x, t = faces(), targets()
    recipe = Augmentation(True, 10.0, 0.1, 0.1, 0.5, 0.8, 0.5, 0.2, 0.5)
    compiled = tf.function(recipe.apply, jit_compile=True)
    out, mixed = compiled(x, t, key())
    again, _ = compiled(x, t, key())
    other, _ = compiled(x, t, key(step=1))
    np.testing.assert_array_equal(out, again)
    assert not np.allclose(out, other)
    assert out.shape == x.shape and float(tf.reduce_min(out)) >= 0
    assert float(tf.reduce_max(out)) <= 255
    np.testing.assert_allclose(tf.reduce_sum(mixed, axis=1), 1.0, atol=1e-5)


def mirror_symmetric_logits(images):
    """A model that cannot tell a face from its mirror image."""
    images = tf.cast(images, tf.float32)
    symmetric = images + tf.reverse(images, axis=[2])
    return tf.stack([tf.reduce_mean(symmetric), tf.reduce_mean(symmetric[:, :8])]) * tf.ones(
        [tf.shape(images)[0], 1]) / 255.0


def test_ten_crop_averages_ten_views_deterministically():
    x = faces(3)
    calls = []

    def counting(images):
        calls.append(images.shape)
        return mirror_symmetric_logits(images)

    ten = Tta("ten_crop", 0.75)
    first = ten.probabilities(counting, x)
    assert len(calls) == 10 and all(shape == (3, SIZE, SIZE, 1) for shape in calls)
    np.testing.assert_array_equal(first, ten.probabilities(counting, x))
    flip = Tta("flip").probabilities(mirror_symmetric_logits, x)
    plain = Tta("none").probabilities(mirror_symmetric_logits, x)
    np.testing.assert_allclose(flip, plain, atol=1e-6)  # mirrors add nothing to such a model
    crops = ten_crop_views(tf.cast(x, tf.float32), 0.75)
    five = tf.add_n([tf.nn.softmax(mirror_symmetric_logits(c)) for c in crops]) / 5
    np.testing.assert_allclose(first, five, atol=1e-6)
