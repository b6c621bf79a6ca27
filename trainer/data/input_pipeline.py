"""The host side of the input: records -> uint8 batches for the device.

Nothing per face runs on the host but reading: faces go to the device as uint8 and are
augmented there (trainer.data.augmentation). Each input pipeline (one per worker) reads its own
share of a split, a partition by record index, and the split is either

- decoded once into memory (`DecodedSplit`) when the share fits the budget: every epoch is then
  a fresh permutation of the whole share, keyed by (seed, epoch, pipeline), and a resumed job
  continues the very stream it was reading (the stream's position is the global step);
- or streamed from the shard files (`RecordFiles`): files sharded across pipelines when there
  are enough of them (else records, after a deterministic interleave), read interleaved through
  a shuffle buffer, reseeded when a job resumes so that it does not replay its batches.

Training batches are (uint8 faces [B,S,S,1], int32 labels [B], float32 targets [B,C]); targets
are the one-hot labels or, for FER+ records trained on the votes, the vote distributions.
Evaluation batches are (uint8 faces, labels, targets, float32 weights): every record once, padded
with weight-0 faces so that every replica runs the same number of full batches (TPUs need
static shapes, and multi-worker replicas must step together).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np
import tensorflow as tf
from absl import logging

from beam_preprocess.record_format import (
    CHANNELS,
    IMAGE_KEY,
    LABEL_DISTRIBUTION_KEY,
    LABEL_KEY,
    Manifest,
    parse_example,
)
from beam_preprocess.user_error import UserError

AUTOTUNE = tf.data.AUTOTUNE
PROGRESS_SECONDS = 60
_DECODE_BATCH = 512


class CorruptRecordError(UserError, RuntimeError):
    """A shard file holds a record that cannot be read or decoded."""


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """An input pipeline, as tf.distribute numbers them (one per worker)."""

    index: int = 0
    count: int = 1

    @classmethod
    def of(cls, context: tf.distribute.InputContext | None) -> Pipeline:
        if context is None:
            return cls()
        return cls(context.input_pipeline_id, context.num_input_pipelines)

    def records(self, total: int) -> int:
        """Records of a split of `total` that this pipeline holds (index % count)."""
        return len(range(self.index, total, self.count))

    def share(self, records: int, global_batch: int) -> int:
        """Entries this pipeline gets of a split padded to whole global batches."""
        return -(-records // global_batch) * global_batch // self.count


def this_pipeline(strategy: tf.distribute.Strategy) -> Pipeline:
    """The input pipeline tf.distribute gives this process (the InputContext it passes to
    distribute_datasets_from_function)."""
    contexts = []

    def capture(context):
        contexts.append(context)
        return tf.data.Dataset.range(1)

    strategy.distribute_datasets_from_function(capture)
    if len(contexts) != 1:
        raise NotImplementedError(f"one input pipeline per process is supported; this "
                                  f"strategy has {len(contexts)}")
    return Pipeline.of(contexts[0])


@dataclasses.dataclass(frozen=True)
class RecordFiles:
    """One split's shard files and how to decode them."""

    name: str
    files: tuple[str, ...]
    records: int
    image_size: int  # the records' side
    num_classes: int
    distribution_targets: bool = False  # targets from the records' vote distributions

    @classmethod
    def of(cls, manifest: Manifest, split: str, data_dir: str,
           distribution_targets: bool = False) -> RecordFiles:
        return cls(split, tuple(manifest.split_files(split, data_dir)),
                   manifest.splits[split].records, manifest.image_size, manifest.num_classes,
                   distribution_targets)

    def decode(self, serialized):
        """A record -> (uint8 face [S,S,1], int32 label, float32 target [C])."""
        parsed = parse_example(serialized, self.image_size, self.num_classes,
                               self.distribution_targets)
        label = tf.cast(parsed[LABEL_KEY], tf.int32)
        tf.debugging.assert_less(label, self.num_classes, message="label out of range")
        tf.debugging.assert_non_negative(label, message="label out of range")
        if self.distribution_targets:
            target = parsed[LABEL_DISTRIBUTION_KEY]
        else:
            target = tf.one_hot(label, self.num_classes, dtype=tf.float32)
        return parsed[IMAGE_KEY], label, target

    def faces(self, pipeline: Pipeline) -> tf.data.Dataset:
        """This pipeline's share (records index % count), each once, in file order."""
        records = tf.data.TFRecordDataset(list(self.files))
        if pipeline.count > 1:
            records = records.shard(pipeline.count, pipeline.index)
        return records.map(self.decode, num_parallel_calls=AUTOTUNE, deterministic=True)

    def train_dataset(self, pipeline: Pipeline, per_replica_batch: int, seed: int,
                      position: int, shuffle_buffer: int) -> tf.data.Dataset:
        """Endless shuffled batches of this pipeline's share. `position` (elements already
        read) reseeds the shuffle, so that a resumed job does not replay its batches."""
        seed = seed * 1_000_003 + position
        files = tf.data.Dataset.from_tensor_slices(list(self.files))
        if pipeline.count > 1 and len(self.files) >= pipeline.count:
            files = files.shard(pipeline.count, pipeline.index)
            records = files.shuffle(len(self.files), seed=seed, reshuffle_each_iteration=True)
            records = records.repeat().interleave(
                tf.data.TFRecordDataset, cycle_length=min(len(self.files), 16),
                num_parallel_calls=AUTOTUNE, deterministic=False)
        else:
            if pipeline.count > 1:
                logging.warning("%d %s files for %d input pipelines: sharding by record (every"
                                " worker reads every file). Write more shards.",
                                len(self.files), self.name, pipeline.count)
            # Deterministic order before the shard, so the shares are a partition.
            records = tf.data.TFRecordDataset(list(self.files)).shard(
                pipeline.count, pipeline.index).repeat()
        return tuned_without_model_thread(
            records.shuffle(shuffle_buffer, seed=seed)
            .map(self.decode, num_parallel_calls=AUTOTUNE, deterministic=False)
            .batch(per_replica_batch, drop_remainder=True)
            .prefetch(AUTOTUNE))

    def eval_dataset(self, pipeline: Pipeline, per_replica_batch: int,
                     num_replicas: int) -> tf.data.Dataset:
        faces = self.faces(pipeline).map(lambda x, y, t: (x, y, t, tf.constant(1.0)))
        return padded_batches(faces, pipeline.records(self.records),
                              pipeline.share(self.records, per_replica_batch * num_replicas),
                              per_replica_batch, [self.image_size, self.image_size, CHANNELS],
                              self.num_classes)

    def reading_errors(self):
        """A context naming the shard file and record of a data error raised inside it."""
        return naming_corrupt_files(self)

    def memory_bytes(self, pipeline: Pipeline) -> int:
        per_face = self.image_size ** 2 * CHANNELS + 4 * (1 + self.num_classes)
        return pipeline.records(self.records) * per_face


def tuned_without_model_thread(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuning model off; AUTOTUNE then means one parallel call
    per core and prefetch's own buffer growth, which these pipelines need.

    The model's optimisation thread sleeps for a period that doubles as an iterator lives (up
    to a minute), and deleting the iterator waits for it to wake: measured 14 s at the end of
    a 90-step training phase and 20 s after the demo's 450 steps, at every phase's end and
    after every validation pass. The results are the same either way (the tests' losses).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def padded_batches(faces: tf.data.Dataset, real: int, share: int, per_replica_batch: int,
                   face_shape, num_classes: int, dtype=tf.uint8) -> tf.data.Dataset:
    """(face, label, target, weight) elements padded with weight-0 blanks to `share`,
    batched."""
    blank = (tf.zeros(face_shape, dtype), tf.constant(0), tf.zeros([num_classes]),
             tf.constant(0.0))
    faces = faces.concatenate(tf.data.Dataset.from_tensors(blank).repeat(share - real))
    return tuned_without_model_thread(
        faces.batch(per_replica_batch, drop_remainder=True).prefetch(AUTOTUNE))


def epoch_permutations(records: int, seed: int, pipeline: Pipeline,
                       position: int) -> tf.data.Dataset:
    """Indices 0..records-1 in a new order every epoch (keyed by seed, epoch and pipeline),
    endlessly, starting at element `position` of that stream."""
    first_epoch, offset = divmod(position, records)

    def permutation(epoch):
        key = tf.stack([tf.constant(seed, tf.int64), epoch * 1009 + pipeline.index])
        return tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(tf.range(records, dtype=tf.int64), key))

    return (tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
            .flat_map(permutation).skip(offset))


@dataclasses.dataclass(frozen=True)
class DecodedSplit:
    """This pipeline's share of a split, decoded once: uint8 faces, labels, targets."""

    name: str
    images: tf.Tensor  # uint8 [n, S, S, 1]
    labels: tf.Tensor  # int32 [n]
    targets: tf.Tensor  # float32 [n, C]
    total_records: int  # of the split, in all pipelines

    @property
    def records(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.targets.shape[1])

    def reading_errors(self):
        return contextlib.nullcontext()

    def train_dataset(self, pipeline: Pipeline, per_replica_batch: int, seed: int,
                      position: int, shuffle_buffer: int = 0) -> tf.data.Dataset:
        """Endless batches; every epoch a permutation of the whole share. `position` (elements
        of this stream already read) makes a resumed job continue the stream exactly."""
        del shuffle_buffer  # the whole share is shuffled
        images, labels, targets = self.images, self.labels, self.targets

        def gather(index):
            return (tf.gather(images, index), tf.gather(labels, index),
                    tf.gather(targets, index))

        return tuned_without_model_thread(
            epoch_permutations(self.records, seed, pipeline, position)
            .batch(per_replica_batch, drop_remainder=True)
            .map(gather, num_parallel_calls=AUTOTUNE)
            .prefetch(AUTOTUNE))

    def eval_dataset(self, pipeline: Pipeline, per_replica_batch: int,
                     num_replicas: int) -> tf.data.Dataset:
        faces = tf.data.Dataset.from_tensor_slices(
            (self.images, self.labels, self.targets, tf.ones([self.records])))
        return padded_batches(faces, self.records,
                              pipeline.share(self.total_records, per_replica_batch * num_replicas),
                              per_replica_batch, self.images.shape[1:], self.num_classes)


def decode_into_memory(source: RecordFiles, pipeline: Pipeline) -> DecodedSplit:
    """Reads and decodes this pipeline's share of `source` once."""
    count = pipeline.records(source.records)
    images = np.empty((count, source.image_size, source.image_size, CHANNELS), np.uint8)
    labels = np.empty((count,), np.int32)
    targets = np.empty((count, source.num_classes), np.float32)
    done, started, reported = 0, time.monotonic(), time.monotonic()
    with naming_corrupt_files(source):
        for x, y, t in source.faces(pipeline).batch(_DECODE_BATCH).as_numpy_iterator():
            images[done:done + len(y)], labels[done:done + len(y)] = x, y
            targets[done:done + len(y)] = t
            done += len(y)
            if time.monotonic() - reported > PROGRESS_SECONDS:
                reported = time.monotonic()
                logging.info("decoding %s: %d of %d faces", source.name, done, count)
    if done != count:
        raise CorruptRecordError(f"{source.name}: the shard files hold {done} records for this "
                                 f"input pipeline, the manifest {count}.")
    logging.info("decoded %d %s faces into memory (%.1f MB) in %.1fs", count, source.name,
                 images.nbytes / 1e6, time.monotonic() - started)
    return DecodedSplit(source.name, tf.constant(images), tf.constant(labels),
                        tf.constant(targets), source.records)


def choose_sources(sources: list[RecordFiles], pipeline: Pipeline,
                   budget_bytes: int) -> dict:
    """{split: DecodedSplit or RecordFiles}: decoded into memory, in the order given, while
    they fit the budget; the others are streamed. Logs what went where and why."""
    chosen, left = {}, budget_bytes
    for source in sources:
        needed = source.memory_bytes(pipeline)
        if needed <= left:
            chosen[source.name] = decode_into_memory(source, pipeline)
            left -= needed
        else:
            logging.info("%s: %.1f MB decoded would exceed --data_in_memory_gb (%.1f MB left):"
                         " streaming it from %d files", source.name, needed / 1e6, left / 1e6,
                         len(source.files))
            chosen[source.name] = source
    return chosen


def find_corrupt_record(source: RecordFiles) -> tuple[str, int, str] | None:
    """(file, record index, error) of the first unreadable record of `source`, or None."""
    for path in source.files:
        index = 0
        try:
            for _ in tf.data.TFRecordDataset(path).map(source.decode):
                index += 1
        except tf.errors.OpError as e:
            return path, index, e.message.strip().splitlines()[0]
    return None


@contextlib.contextmanager
def naming_corrupt_files(source: RecordFiles):
    """Turns a data error raised by a running input pipeline into a CorruptRecordError naming
    the shard file and record (tf.data's own messages do not say which file)."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        found = find_corrupt_record(source)
        if found is None:
            raise
        path, index, message = found
        raise CorruptRecordError(f"{path}: record {index} cannot be read ({message})") from e
