"""The cached-feature fast path: cached features are the frozen part's output, kept right."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.support.trainer_data import balanced_counts, write_data_dir
from trainer.data.feature_cache import CACHE_INFO_FILENAME, MEMORY, SplitSource, cache_features
from trainer.data.input_pipeline import Pipeline, RecordFiles
from trainer.data.manifest import data_digest
from trainer.model import build_emotion_model, split_at_cut
from trainer.vggface.layout import keras_name

SIZE = 64
BATCH = 4
GB = 2**30


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    counts = {"train": balanced_counts(2), "validation": balanced_counts(1),
              "test": balanced_counts(1)}
    return str(data_dir), write_data_dir(data_dir, counts, image_size=SIZE)


@pytest.fixture(scope="module")
def model():
    return build_emotion_model(7, image_size=SIZE, dense_units=16, trainable_from="conv5_3")


def _records(data, split="train"):
    data_dir, manifest = data
    return RecordFiles.of(manifest, split, data_dir)


def _cache(model, data, tmp_path, dtype="float32", budget=GB, views=2, split="train"):
    frozen, _ = split_at_cut(model, "conv5_3")
    caches = cache_features(tf.distribute.get_strategy(), frozen,
                            [SplitSource(split, _records(data, split), views)],
                            per_replica_batch=BATCH, store_dtype=dtype,
                            cache_dir=str(tmp_path / "cache"), memory_budget_bytes=budget,
                            data_digest=data_digest(data[1]))
    return caches[split]


def _faces_in_cache_order(data, split="train"):
    """The uint8 faces and labels of a split, in the order the cache holds them."""
    batches = _records(data, split).eval_dataset(Pipeline(), BATCH, 1)
    faces, labels = [], []
    for images, batch_labels, _, weights in batches:
        keep = weights.numpy() > 0
        faces.append(images.numpy()[keep])
        labels.append(batch_labels.numpy()[keep])
    return np.concatenate(faces), np.concatenate(labels)


def _cached(cache):
    features, labels, _ = zip(*cache.faces().as_numpy_iterator(), strict=True)
    return np.stack(features).astype(np.float32), np.array(labels)


@pytest.mark.parametrize("dtype, budget, tolerance", [
    ("float32", GB, 1e-4), ("float16", 0, 1e-2)], ids=["memory-float32", "disk-float16"])
def test_cached_path_gives_the_full_models_logits(model, data, tmp_path, dtype, budget,
                                                  tolerance):
    cache = _cache(model, data, tmp_path, dtype, budget)
    assert (cache.location == MEMORY) == (budget > 0)
    faces, labels = _faces_in_cache_order(data)
    features, cached_labels = _cached(cache)
    np.testing.assert_array_equal(cached_labels, labels)
    _, trainable = split_at_cut(model, "conv5_3")
    full = model(faces, training=False).numpy()
    mirrored = model(faces[:, :, ::-1], training=False).numpy()
    scale = np.abs(full).max()
    np.testing.assert_allclose(trainable(features[:, 0]).numpy(), full, atol=tolerance * scale)
    np.testing.assert_allclose(trainable(features[:, 1]).numpy(), mirrored,
                               atol=tolerance * scale)
    assert not np.allclose(full, mirrored, atol=tolerance * scale)


def test_training_batches_show_each_face_or_its_mirror_image(model, data, tmp_path):
    cache = _cache(model, data, tmp_path)
    features, labels = _cached(cache)
    key = {}
    for index, face in enumerate(features):
        for view in range(2):
            key[face[view].tobytes()] = (labels[index], view)
    seen_views = set()
    batches = cache.train_dataset(Pipeline(), BATCH, seed=1, position=0,
                                  shuffle_buffer=16).take(20)
    for batch_features, batch_labels, _ in batches.as_numpy_iterator():
        assert batch_features.shape == (BATCH, *features.shape[2:])
        assert batch_features.dtype == np.float32
        for face, label in zip(batch_features, batch_labels, strict=True):
            cached_label, view = key[face.tobytes()]
            assert cached_label == label
            seen_views.add(view)
    assert seen_views == {0, 1}


@pytest.mark.parametrize("budget", [GB, 0], ids=["memory", "disk"])
def test_evaluation_batches_cover_every_face_once_plus_zero_weight_padding(model, data,
                                                                           tmp_path, budget):
    cache = _cache(model, data, tmp_path, budget=budget, views=1, split="validation")
    records = data[1].splits["validation"].records
    batches = list(cache.eval_dataset(Pipeline(), BATCH, num_replicas=1).as_numpy_iterator())
    weights = np.concatenate([w for _, _, _, w in batches])
    assert len(weights) == -(-records // BATCH) * BATCH
    assert weights.sum() == records
    _, labels = _faces_in_cache_order(data, "validation")
    np.testing.assert_array_equal(np.concatenate([y for _, y, _, _ in batches])[:records], labels)


def test_disk_cache_is_reused_until_the_frozen_weights_change(model, data, tmp_path):
    first = _cache(model, data, tmp_path, budget=0)
    info = os.path.join(first.location, CACHE_INFO_FILENAME)
    written = os.stat(info).st_mtime_ns
    again = _cache(model, data, tmp_path, budget=0)
    assert again.location == first.location
    assert os.stat(info).st_mtime_ns == written
    assert json.loads(Path(info).read_text())["records"] == data[1].splits["train"].records

    conv = model.get_layer(keras_name("conv1/7x7_s2"))
    kernel = conv.kernel
    original = kernel.numpy()
    try:
        kernel.assign(original * 1.5)
        rebuilt = _cache(model, data, tmp_path, budget=0)
    finally:
        kernel.assign(original)
    assert rebuilt.location != first.location
    assert not os.path.exists(first.location), "the stale cache was left on disk"


def test_disk_cache_is_rebuilt_for_other_records_or_another_precision_policy(model, data,
                                                                             tmp_path):
    """The fingerprint covers the records' content (the manifest's shard hashes), not only
    their sizes, and the precision the frozen part computes in."""
    import keras

    frozen, _ = split_at_cut(model, "conv5_3")
    split = [SplitSource("train", _records(data), 1)]

    def cache(digest):
        return cache_features(tf.distribute.get_strategy(), frozen, split,
                              per_replica_batch=BATCH, store_dtype="float32",
                              cache_dir=str(tmp_path / "cache"), memory_budget_bytes=0,
                              data_digest=digest)["train"].location

    first = cache("digest-a")
    assert cache("digest-a") == first
    other_records = cache("digest-b")
    assert other_records != first
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        other_policy = cache("digest-b")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert other_policy not in (first, other_records)


def test_disk_cache_is_rebuilt_for_another_network_side_with_the_same_feature_shape(data,
                                                                                    tmp_path):
    """224 and 208 px networks both give 7x7x2048 at conv5_3's input: same shapes, other
    features. The fingerprint sees the resize's settings, not only shapes and weights."""
    def location(side):
        model = build_emotion_model(7, image_size=side, dense_units=16,
                                    trainable_from="conv5_3", input_size=SIZE)
        model.set_weights(reference.get_weights())  # the same weights: only the side differs
        return _cache(model, data, tmp_path, budget=0).location

    reference = build_emotion_model(7, image_size=224, dense_units=16, trainable_from="conv5_3",
                                    input_size=SIZE)
    at_224 = location(224)
    assert location(224) == at_224
    assert location(208) != at_224
