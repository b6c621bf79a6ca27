"""The host side of the input: decoded once or streamed, shuffled for real, partitioned."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.support.trainer_data import balanced_counts, write_data_dir
from trainer.data.input_pipeline import (
    CorruptRecordError,
    DecodedSplit,
    Pipeline,
    RecordFiles,
    choose_sources,
    decode_into_memory,
    epoch_permutations,
)
from trainer.data.manifest import load_manifest

SIZE = 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("records")
    write_data_dir(path, {"train": [3, 1, 2, 3, 2, 2, 3], "validation": balanced_counts(1),
                          "test": balanced_counts(1)}, image_size=SIZE, num_shards=2)
    return str(path)


def _files(data_dir, split="train") -> RecordFiles:
    return RecordFiles.of(load_manifest(data_dir), split, data_dir)


def _row_ids(dataset, take):
    """Each face stands for itself: identify faces by their bytes."""
    return [image.tobytes() for images, _, _ in dataset.take(take).as_numpy_iterator()
            for image in images]


@pytest.mark.parametrize("in_memory", [True, False], ids=["decoded", "streamed"])
def test_training_batches_are_uint8_faces_labels_and_one_hot_targets(data_dir, in_memory):
    source = _files(data_dir)
    if in_memory:
        source = decode_into_memory(source, Pipeline())
    images, labels, targets = next(iter(source.train_dataset(Pipeline(), 4, seed=1,
                                                             position=0, shuffle_buffer=8)))
    assert images.shape == (4, SIZE, SIZE, 1) and images.dtype == tf.uint8
    assert labels.dtype == tf.int32 and np.all((labels.numpy() >= 0) & (labels.numpy() < 7))
    np.testing.assert_array_equal(targets.numpy(), tf.one_hot(labels, 7).numpy())


def test_the_decoded_split_fits_the_budget_or_is_streamed(data_dir):
    sources = [_files(data_dir), _files(data_dir, "validation")]
    train_bytes = sources[0].memory_bytes(Pipeline())
    chosen = choose_sources(sources, Pipeline(), train_bytes)
    assert isinstance(chosen["train"], DecodedSplit)
    assert isinstance(chosen["validation"], RecordFiles)  # the budget was used up
    assert isinstance(choose_sources(sources, Pipeline(), 0)["train"], RecordFiles)


def test_a_class_sorted_split_is_read_in_mixed_order(tmp_path):
    """Rows sorted by class (all of class 0 first, ...), given to shards round robin as a
    class-sorted CSV once was: the decoded split is shuffled whole, so the first batches mix
    classes as a shuffled split's do."""
    write_data_dir(tmp_path, {"train": balanced_counts(16), "validation": balanced_counts(1),
                              "test": balanced_counts(1)}, image_size=SIZE, num_shards=4,
                   by_class=True)
    source = _files(str(tmp_path))
    # Reading the shards record by record, as the first trainer did, gives back class order.
    interleaved = tf.data.Dataset.from_tensor_slices(list(source.files)).interleave(
        tf.data.TFRecordDataset, cycle_length=4, block_length=1).map(source.decode)
    old_order = [int(y) for _, y, _ in interleaved.as_numpy_iterator()]
    assert old_order == sorted(old_order)
    decoded = decode_into_memory(source, Pipeline())
    first = decoded.train_dataset(Pipeline(), 8, seed=0, position=0).take(4)
    classes = {int(y) for _, labels, _ in first.as_numpy_iterator() for y in labels}
    assert classes == set(range(7))


def test_every_epoch_is_a_new_permutation_and_a_resume_continues_the_stream():
    stream = list(epoch_permutations(10, seed=3, pipeline=Pipeline(), position=0)
                  .take(30).as_numpy_iterator())
    epochs = [stream[i:i + 10] for i in (0, 10, 20)]
    assert all(sorted(epoch) == list(range(10)) for epoch in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    resumed = list(epoch_permutations(10, seed=3, pipeline=Pipeline(), position=13)
                   .take(17).as_numpy_iterator())
    assert resumed == stream[13:30]
    other_worker = list(epoch_permutations(10, seed=3, pipeline=Pipeline(1, 2), position=0)
                        .take(10).as_numpy_iterator())
    assert other_worker != epochs[0]


@pytest.mark.parametrize("shards", [2, 1], ids=["by file", "by record"])
def test_workers_read_a_partition_of_the_train_split(tmp_path, shards):
    write_data_dir(tmp_path, {"train": balanced_counts(2), "validation": balanced_counts(1),
                              "test": balanced_counts(1)}, image_size=SIZE, num_shards=shards)
    source = _files(str(tmp_path))
    everyone = set(_row_ids(source.train_dataset(Pipeline(), 1, 0, 0, 1), 14))
    assert len(everyone) == 14
    for decoded in (False, True):
        seen = []
        for index in range(2):
            pipeline = Pipeline(index, 2)
            worker = decode_into_memory(source, pipeline) if decoded else source
            seen.append(set(_row_ids(worker.train_dataset(pipeline, 1, 0, 0, 1), 40)))
        assert not seen[0] & seen[1], "two workers read the same face"
        assert seen[0] | seen[1] == everyone, "a face was read by no worker"


def test_eval_data_is_padded_so_every_replica_runs_the_same_full_batches(data_dir):
    source = _files(data_dir)
    records = source.records  # 16
    for decoded in (False, True):
        batches = []
        for index in range(2):
            pipeline = Pipeline(index, 2)
            worker = decode_into_memory(source, pipeline) if decoded else source
            batches.append(list(worker.eval_dataset(pipeline, 3, 2)))
        assert len(batches[0]) == len(batches[1]) == 3  # 16 faces -> 18 = 3 x (2 x 3)
        every = batches[0] + batches[1]
        assert all(images.shape[0] == 3 for images, _, _, _ in every)
        assert sum(float(tf.reduce_sum(w)) for _, _, _, w in every) == records
        counts = np.zeros(7)
        for _, labels, _, weights in every:
            np.add.at(counts, labels.numpy(), weights.numpy())
        assert counts.tolist() == [3, 1, 2, 3, 2, 2, 3]


def test_a_corrupt_record_is_reported_with_its_file(tmp_path):
    write_data_dir(tmp_path, {"train": balanced_counts(2), "validation": balanced_counts(1),
                              "test": balanced_counts(1)}, image_size=SIZE, num_shards=2)
    source = _files(str(tmp_path))
    shard = tmp_path / "train-00001-of-00002.tfrecord"
    broken = bytearray(shard.read_bytes())
    broken[len(broken) // 2] ^= 0xFF
    shard.write_bytes(bytes(broken))
    expected = r"train-00001-of-00002\.tfrecord: record \d"
    with pytest.raises(CorruptRecordError, match=expected), source.reading_errors():
        for _ in source.train_dataset(Pipeline(), 2, 0, 0, 2).take(20):
            pass
    with pytest.raises(CorruptRecordError, match=expected):
        decode_into_memory(source, Pipeline())


def test_vote_distributions_become_the_training_targets(tmp_path):
    from tests.support.trainer_data import vote_distribution

    manifest = write_data_dir(tmp_path, {"train": [2] * 7, "validation": [1] * 7,
                                         "test": [1] * 7}, image_size=SIZE, votes=True)
    source = RecordFiles.of(manifest, "train", str(tmp_path), distribution_targets=True)
    for _, label, target in source.faces(Pipeline()).as_numpy_iterator():
        np.testing.assert_allclose(target, vote_distribution(int(label), 7))
