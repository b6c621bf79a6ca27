"""Cached features: the frozen part of the network run once per face and reused every epoch.

Below the fine-tuning cut the network is frozen and its BatchNorm runs in inference mode, so
what it outputs for a face never changes while training. With --cache_features the trainer
runs that frozen part once per training face (and once more on the mirror image when flips
are on) and once per validation face, and trains only the part above the cut on the results.
Both phases train on the same cache: the head phase runs the (then frozen) blocks above the
cut forward on it, which is cheap.

Where the cache lives: in memory when it fits in the memory budget, else as TFRecord shards
in a directory (job_dir/cache/). A face at 224 px is 7x7x2048 values per view: 401 kB in
float32, 201 kB in float16, so fer2013's 28,709 training faces with mirror images take 11.5 GB
even in float16: disk. A disk cache is named by a fingerprint of the frozen weights, the data
records' content (the shard hashes of the manifest), the precision policy and the layout, so a
restarted job reuses it and a changed job never does.

Each process caches the faces of its own input pipeline, split by record as the evaluation
data is, so every worker of a multi-worker job caches its share in parallel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import posixpath
import time
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from trainer.data.input_pipeline import (
    Pipeline,
    epoch_permutations,
    padded_batches,
    this_pipeline,
    tuned_without_model_thread,
)
from trainer.training.preemption import raise_if_sigterm_received

AUTOTUNE = tf.data.AUTOTUNE
MEMORY = "memory"
CACHE_INFO_FILENAME = "cache.json"
STORE_DTYPES = ("float16", "float32")
SHARD_BYTES = 128 * 2**20
# The disk cache is shuffled through a buffer of whole feature maps: bound it in bytes.
SHUFFLE_BUFFER_BYTES = 256 * 2**20
PROGRESS_SECONDS = 60
_FEATURES_KEY = "features"
_LABEL_KEY = "label"
_TARGET_KEY = "target"


@dataclasses.dataclass(frozen=True)
class CacheLayout:
    """What one cached face holds: `views` feature maps of `shape` in `dtype`; view 0 is the
    face, view 1 (if any) its mirror image."""

    shape: tuple[int, int, int]
    views: int
    dtype: str
    num_classes: int

    @property
    def face_bytes(self) -> int:
        return self.views * math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class FeatureCache:
    """The cached faces of one split that this process's input pipeline reads; a data source
    like input_pipeline's, of features instead of faces."""

    name: str
    layout: CacheLayout
    records: int  # faces held here
    total_records: int  # faces of the split in all pipelines
    location: str  # MEMORY or the shard directory
    # memory: features [records*views,H,W,C], labels [records], targets [records, C]
    tensors: tuple[tf.Tensor, tf.Tensor, tf.Tensor] | None = None
    files: tuple[str, ...] = ()  # disk

    def faces(self) -> tf.data.Dataset:
        """Every cached face once, in order: (features [views,H,W,C], label, target)."""
        if self.tensors is None:
            parse = _parser(self.layout)
            return tf.data.TFRecordDataset(list(self.files)).map(parse,
                                                                 num_parallel_calls=AUTOTUNE)
        features, labels, targets = self.tensors
        views = self.layout.views
        return tf.data.Dataset.range(self.records).map(
            lambda i: (features[i * views:(i + 1) * views], labels[i], targets[i]))

    def train_dataset(self, pipeline: Pipeline, per_replica_batch: int, seed: int,
                      position: int, shuffle_buffer: int) -> tf.data.Dataset:
        """Endless (float32 features [B,H,W,C], labels, targets) batches, each face as itself
        or (when cached) its mirror image with equal chance, as a random flip would."""
        if self.tensors is None:
            dataset = self._shuffled_from_disk(per_replica_batch, shuffle_buffer,
                                               seed * 1_000_003 + position)
        else:
            dataset = self._shuffled_from_memory(pipeline, per_replica_batch, seed, position)
        return tuned_without_model_thread(dataset.prefetch(AUTOTUNE))

    def eval_dataset(self, pipeline: Pipeline, per_replica_batch: int,
                     num_replicas: int) -> tf.data.Dataset:
        """(float32 features, labels, targets, weights) batches of view 0, padded with weight-0
        entries exactly as the faces are, so that every replica runs the same batches."""
        faces = self.faces().map(lambda f, y, t: (tf.cast(f[0], tf.float32), y, t,
                                                  tf.constant(1.0)))
        return padded_batches(faces, self.records,
                              pipeline.share(self.total_records, per_replica_batch * num_replicas),
                              per_replica_batch, self.layout.shape, self.layout.num_classes,
                              tf.float32)

    def reading_errors(self):
        return contextlib.nullcontext()

    def _shuffled_from_memory(self, pipeline: Pipeline, batch: int, seed: int,
                              position: int) -> tf.data.Dataset:
        features, labels, targets = self.tensors
        views = self.layout.views

        def gather(step, index):
            # The view (face or mirror) of each face is keyed by where it stands in the stream.
            key = tf.stack([tf.constant(seed, tf.int64), step])
            view = tf.random.stateless_uniform(tf.shape(index), key, 0, views, dtype=tf.int64)
            return (tf.cast(tf.gather(features, index * views + view), tf.float32),
                    tf.gather(labels, index), tf.gather(targets, index))

        return (epoch_permutations(self.records, seed, pipeline, position)
                .batch(batch, drop_remainder=True).enumerate(position // batch)
                .map(gather, num_parallel_calls=AUTOTUNE))

    def _shuffled_from_disk(self, batch: int, shuffle_buffer: int,
                            seed: int) -> tf.data.Dataset:
        views = self.layout.views
        buffer = max(batch, min(shuffle_buffer, SHUFFLE_BUFFER_BYTES // self.layout.face_bytes))
        files = tf.data.Dataset.from_tensor_slices(list(self.files)).shuffle(
            len(self.files), seed=seed, reshuffle_each_iteration=True)
        records = files.repeat().interleave(
            tf.data.TFRecordDataset, cycle_length=min(len(self.files), 8),
            num_parallel_calls=AUTOTUNE, deterministic=False)

        def one_view(features, label, target):
            view = tf.random.uniform([], 0, views, dtype=tf.int32)
            return tf.cast(features[view], tf.float32), label, target

        return (records.shuffle(buffer, seed=seed)
                .map(_parser(self.layout), num_parallel_calls=AUTOTUNE, deterministic=False)
                .map(one_view, num_parallel_calls=AUTOTUNE, deterministic=False)
                .batch(batch, drop_remainder=True))


def _parser(layout: CacheLayout):
    spec = {_FEATURES_KEY: tf.io.FixedLenFeature([], tf.string),
            _LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
            _TARGET_KEY: tf.io.FixedLenFeature([layout.num_classes], tf.float32)}

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, spec)
        features = tf.io.decode_raw(example[_FEATURES_KEY], layout.dtype)
        return (tf.reshape(features, [layout.views, *layout.shape]),
                tf.cast(example[_LABEL_KEY], tf.int32), example[_TARGET_KEY])

    return parse


# --- building ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitSource:
    """Where one split's faces come from (an input_pipeline source), and how many views of each
    face to cache."""

    name: str
    source: object  # RecordFiles or DecodedSplit: has eval_dataset(...) and records
    views: int

    @property
    def records(self) -> int:
        return getattr(self.source, "total_records", self.source.records)


def cache_features(strategy: tf.distribute.Strategy, frozen_part: keras.Model,
                   sources: list[SplitSource], *, per_replica_batch: int, store_dtype: str,
                   cache_dir: str, memory_budget_bytes: int, data_digest: str,
                   jit_compile: bool = False) -> dict[str, FeatureCache]:
    """Runs `frozen_part` over every face of `sources` once; returns {split: FeatureCache}.

    All splits are kept in memory if together they fit in `memory_budget_bytes`, else written
    to (or, when an identical cache is there, reused from) TFRecord shards under `cache_dir`.
    `frozen_part` must be frozen (BatchNorm in inference mode): see model.split_at_cut.
    `data_digest` names the records' content (trainer.data.manifest.data_digest).
    """
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, got {store_dtype!r}")
    pipeline = this_pipeline(strategy)
    shape = tuple(int(d) for d in frozen_part.output.shape[1:])
    layouts = {s.name: CacheLayout(shape, s.views, store_dtype, s.source.num_classes)
               for s in sources}
    needed = sum(s.records * layouts[s.name].face_bytes for s in sources) // pipeline.count
    in_memory = needed <= memory_budget_bytes
    where = "kept in memory" if in_memory else f"written to TFRecord shards in {cache_dir}"
    logging.info("feature cache: %s of %s %s = %s for this process, %s the %s budget "
                 "(--cache_memory_gb): %s", " + ".join(
                     f"{s.records} {s.name} faces x {s.views} view(s)" for s in sources),
                 "x".join(map(str, shape)), store_dtype, _size(needed),
                 "within" if in_memory else "over", _size(memory_budget_bytes), where)
    extractor = _Extractor(strategy, frozen_part, store_dtype, per_replica_batch, jit_compile)
    caches = {}
    for source in sources:
        layout = layouts[source.name]
        if in_memory:
            caches[source.name] = extractor.to_memory(source, layout, pipeline)
        else:
            fingerprint = _fingerprint(frozen_part, source, layout, pipeline, data_digest)
            caches[source.name] = extractor.to_disk(source, layout, pipeline, cache_dir,
                                                    fingerprint)
    return caches


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e8 else f"{num_bytes / 1e6:.1f} MB"


class _Extractor:
    """Runs the frozen part over a split on every replica, batch by batch."""

    def __init__(self, strategy, frozen_part, store_dtype, per_replica_batch, jit_compile):
        self._strategy = strategy
        self._frozen_part = frozen_part
        self._store_dtype = store_dtype
        self._batch = per_replica_batch
        self._jit_compile = jit_compile
        self._steps = {}

    def to_memory(self, split: SplitSource, layout: CacheLayout,
                  pipeline: Pipeline) -> FeatureCache:
        capacity = pipeline.share(split.records, self._global_batch)
        features = np.empty((capacity * layout.views, *layout.shape), layout.dtype)
        labels = np.empty((capacity,), np.int32)
        targets = np.empty((capacity, layout.num_classes), np.float32)
        count = 0
        for batch_features, batch_labels, batch_targets in self._run(split, layout):
            end = count + len(batch_labels)
            features[count * layout.views:end * layout.views] = batch_features.reshape(
                -1, *layout.shape)
            labels[count:end], targets[count:end] = batch_labels, batch_targets
            count = end
        tensors = (tf.constant(features[:count * layout.views]), tf.constant(labels[:count]),
                   tf.constant(targets[:count]))
        return FeatureCache(split.name, layout, count, split.records, MEMORY, tensors=tensors)

    def to_disk(self, split: SplitSource, layout: CacheLayout, pipeline: Pipeline,
                cache_dir: str, fingerprint: str) -> FeatureCache:
        prefix = f"{split.name}-pipeline{pipeline.index}of{pipeline.count}-"
        directory = posixpath.join(cache_dir, prefix + fingerprint[:16])
        info = _read_info(directory)
        if info is not None and info["fingerprint"] == fingerprint:
            logging.info("feature cache: reusing %s (%d faces)", directory, info["records"])
            return _disk_cache(split, layout, directory, info)
        _remove_stale(cache_dir, prefix, directory)
        tf.io.gfile.makedirs(directory)
        writer = _ShardWriter(directory, split.name,
                              max(1, SHARD_BYTES // layout.face_bytes))
        for batch in self._run(split, layout):
            writer.write(*batch)
        info = {"fingerprint": fingerprint, "records": writer.records,
                "files": [posixpath.basename(f) for f in writer.close()],
                "layout": dataclasses.asdict(layout)}
        # Written last: a directory without it is an interrupted cache and is rebuilt.
        raise_if_sigterm_received()
        with tf.io.gfile.GFile(posixpath.join(directory, CACHE_INFO_FILENAME), "w") as f:
            f.write(json.dumps(info, indent=1) + "\n")
        return _disk_cache(split, layout, directory, info)

    @property
    def _global_batch(self) -> int:
        return self._batch * self._strategy.num_replicas_in_sync

    def _step(self, views: int):
        if views not in self._steps:
            frozen_part, dtype = self._frozen_part, self._store_dtype

            @tf.function(jit_compile=self._jit_compile or None)
            def features_of(images):
                images = tf.cast(images, tf.float32)
                maps = [frozen_part(images, training=False)]
                if views == 2:
                    maps.append(frozen_part(tf.reverse(images, axis=[2]), training=False))
                return tf.cast(tf.stack(maps, axis=1), dtype)

            @tf.function
            def step(batch):
                return self._strategy.run(lambda x, y, t, w: (features_of(x), y, t, w),
                                          args=batch)

            self._steps[views] = step
        return self._steps[views]

    def _run(self, split: SplitSource, layout: CacheLayout):
        """Yields (features [n,views,H,W,C], labels [n], targets [n,C]) numpy batches of this
        pipeline's faces, padding dropped."""
        strategy, replicas = self._strategy, self._strategy.num_replicas_in_sync
        datasets = strategy.distribute_datasets_from_function(
            lambda context: split.source.eval_dataset(Pipeline.of(context), self._batch,
                                                      replicas))
        step = self._step(layout.views)
        done, started, reported = 0, time.monotonic(), time.monotonic()
        with split.source.reading_errors():
            for batch in datasets:
                outputs = [strategy.experimental_local_results(o) for o in step(batch)]
                for features, labels, targets, weights in zip(*outputs, strict=True):
                    real = weights.numpy() > 0
                    done += int(real.sum())
                    yield features.numpy()[real], labels.numpy()[real], targets.numpy()[real]
                if time.monotonic() - reported > PROGRESS_SECONDS:
                    reported = time.monotonic()
                    logging.info("caching %s features: %d faces in %.0fs", split.name, done,
                                 reported - started)
        logging.info("cached %s features of %d faces in %.1fs", split.name, done,
                     time.monotonic() - started)


class _ShardWriter:
    """Writes (features, label, target) records to shards of `per_shard` records each."""

    def __init__(self, directory: str, split: str, per_shard: int):
        self._directory, self._split, self._per_shard = directory, split, per_shard
        self._files, self._writer, self.records = [], None, 0

    def write(self, features: np.ndarray, labels: np.ndarray, targets: np.ndarray) -> None:
        for face, label, target in zip(features, labels, targets, strict=True):
            if self.records % self._per_shard == 0:
                self._next_shard()
            example = tf.train.Example(features=tf.train.Features(feature={
                _FEATURES_KEY: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[np.ascontiguousarray(face).tobytes()])),
                _LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                _TARGET_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=target)),
            }))
            self._writer.write(example.SerializeToString())
            self.records += 1

    def _next_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        path = posixpath.join(self._directory, f"{self._split}-{len(self._files):05d}.tfrecord")
        self._files.append(path)
        self._writer = tf.io.TFRecordWriter(path)

    def close(self) -> list[str]:
        if self._writer is not None:
            self._writer.close()
        return self._files


def _fingerprint(frozen_part: keras.Model, split: SplitSource, layout: CacheLayout,
                 pipeline: Pipeline, data_digest: str) -> str:
    """Changes when anything the cached values depend on changes: the frozen weights and their
    computation (every layer's settings, the network's side among them, shapes, precision
    policy), the records' content, the layout, the pipeline."""
    digest = hashlib.sha256()
    digest.update(json.dumps({
        "split": split.name, "data": data_digest, "layout": dataclasses.asdict(layout),
        "pipeline": dataclasses.asdict(pipeline), "input": list(frozen_part.input_shape),
        "policy": keras.mixed_precision.global_policy().name,
        "model": [(w.path, list(w.shape)) for w in frozen_part.weights],
        "computation": _computation(frozen_part),
    }, sort_keys=True, default=str).encode())
    for weight in frozen_part.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def _computation(model: keras.Model) -> list:
    """Each layer's kind and settings, without its name (names count up within a process):
    e.g. the resize to the network's side, which leaves the output shape as it was for 224
    and 208 px (7x7x2048 both)."""
    return [(type(layer).__name__, _unnamed(layer.get_config())) for layer in model.layers]


def _unnamed(config):
    if isinstance(config, dict):
        return {k: _unnamed(v) for k, v in config.items() if k != "name"}
    if isinstance(config, list | tuple):
        return [_unnamed(v) for v in config]
    return config


def _read_info(directory: str) -> dict | None:
    path = posixpath.join(directory, CACHE_INFO_FILENAME)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def _remove_stale(cache_dir: str, prefix: str, keep: str) -> None:
    """Deletes this pipeline's caches of the split made for other weights or data (at full
    size each is gigabytes), and an interrupted build at `keep` (no cache.json), so that the
    build starts from an empty directory."""
    if not tf.io.gfile.isdir(cache_dir):
        return
    for name in tf.io.gfile.listdir(cache_dir):
        path = posixpath.join(cache_dir, name.rstrip("/"))
        if name.startswith(prefix) and path != keep:
            logging.info("feature cache: removing %s (other weights, data or layout)", path)
            tf.io.gfile.rmtree(path)
    if tf.io.gfile.exists(keep):
        tf.io.gfile.rmtree(keep)


def _disk_cache(split: SplitSource, layout: CacheLayout, directory: str,
                info: Mapping) -> FeatureCache:
    files = tuple(posixpath.join(directory, name) for name in info["files"])
    return FeatureCache(split.name, layout, int(info["records"]), split.records, directory,
                        files=files)
