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
files and the layout, so a restarted job reuses it and a changed job never does.

Each process caches the faces of its own input pipeline, split by record as the evaluation
data is, so every worker of a multi-worker job caches its share in parallel.
"""

from __future__ import annotations

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

from beam_preprocess.record_format import Manifest
from trainer.data.input_pipeline import eval_dataset, naming_corrupt_files

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


@dataclasses.dataclass(frozen=True)
class CacheLayout:
    """What one cached face holds: `views` feature maps of `shape` in `dtype`; view 0 is the
    face, view 1 (if any) its mirror image."""

    shape: tuple[int, int, int]
    views: int
    dtype: str

    @property
    def face_bytes(self) -> int:
        return self.views * math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """This process's input pipeline, as tf.distribute numbers them."""

    index: int
    count: int

    def share(self, records: int, global_batch: int) -> int:
        """Entries this pipeline gets of a split padded to whole global batches."""
        return -(-records // global_batch) * global_batch // self.count


@dataclasses.dataclass(frozen=True)
class FeatureCache:
    """The cached faces of one split that this process's input pipeline reads."""

    split: str
    layout: CacheLayout
    records: int  # faces held here
    total_records: int  # faces of the split in all pipelines
    pipeline: Pipeline
    location: str  # MEMORY or the shard directory
    tensors: tuple[tf.Tensor, tf.Tensor] | None = None  # memory: [records*views,H,W,C], [records]
    files: tuple[str, ...] = ()  # disk

    def faces(self) -> tf.data.Dataset:
        """Every cached face once, in order: (features [views,H,W,C], int32 label)."""
        if self.tensors is None:
            parse = _parser(self.layout)
            return tf.data.TFRecordDataset(list(self.files)).map(parse,
                                                                 num_parallel_calls=AUTOTUNE)
        features, labels = self.tensors
        views = self.layout.views
        return tf.data.Dataset.range(self.records).map(
            lambda i: (features[i * views:(i + 1) * views], labels[i]))

    def train_dataset(self, per_replica_batch: int, shuffle_buffer: int,
                      seed: int) -> tf.data.Dataset:
        """Endless shuffled (float32 features [B,H,W,C], int32 labels) batches, each face as
        itself or (when cached) its mirror image with equal chance, as a random flip would."""
        if self.tensors is None:
            dataset = self._shuffled_from_disk(per_replica_batch, shuffle_buffer, seed)
        else:
            dataset = self._shuffled_from_memory(per_replica_batch, seed)
        return dataset.prefetch(AUTOTUNE)

    def eval_dataset(self, per_replica_batch: int, num_replicas: int) -> tf.data.Dataset:
        """(float32 features, int32 labels, float32 weights) batches of view 0, padded with
        weight-0 entries exactly as input_pipeline.eval_dataset pads faces, so that every
        replica runs the same number of full batches."""
        share = self.pipeline.share(self.total_records, per_replica_batch * num_replicas)
        blank = (tf.zeros(self.layout.shape, tf.float32), tf.constant(0), tf.constant(0.0))
        faces = self.faces().map(lambda f, y: (tf.cast(f[0], tf.float32), y, tf.constant(1.0)))
        faces = faces.concatenate(tf.data.Dataset.from_tensors(blank).repeat(share - self.records))
        return faces.batch(per_replica_batch, drop_remainder=True).prefetch(AUTOTUNE)

    def _shuffled_from_memory(self, batch: int, seed: int) -> tf.data.Dataset:
        features, labels = self.tensors
        views = self.layout.views

        def gather(index):
            view = tf.random.uniform(tf.shape(index), 0, views, dtype=tf.int64)
            return (tf.cast(tf.gather(features, index * views + view), tf.float32),
                    tf.gather(labels, index))

        indices = tf.data.Dataset.range(self.records).shuffle(
            self.records, seed=seed, reshuffle_each_iteration=True)
        return (indices.repeat().batch(batch, drop_remainder=True)
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

        def one_view(features, label):
            view = tf.random.uniform([], 0, views, dtype=tf.int32)
            return tf.cast(features[view], tf.float32), label

        return (records.shuffle(buffer, seed=seed)
                .map(_parser(self.layout), num_parallel_calls=AUTOTUNE, deterministic=False)
                .map(one_view, num_parallel_calls=AUTOTUNE, deterministic=False)
                .batch(batch, drop_remainder=True))


def _parser(layout: CacheLayout):
    spec = {_FEATURES_KEY: tf.io.FixedLenFeature([], tf.string),
            _LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, spec)
        features = tf.io.decode_raw(example[_FEATURES_KEY], layout.dtype)
        return (tf.reshape(features, [layout.views, *layout.shape]),
                tf.cast(example[_LABEL_KEY], tf.int32))

    return parse


# --- building ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitSource:
    """Where one split's faces come from, and how many views of each to cache."""

    name: str
    files: list[str]
    records: int
    views: int


def cache_features(strategy: tf.distribute.Strategy, frozen_part: keras.Model,
                   manifest: Manifest, sources: list[SplitSource], per_replica_batch: int,
                   store_dtype: str, cache_dir: str, memory_budget_bytes: int,
                   jit_compile: bool = False) -> dict[str, FeatureCache]:
    """Runs `frozen_part` over every face of `sources` once; returns {split: FeatureCache}.

    All splits are kept in memory if together they fit in `memory_budget_bytes`, else written
    to (or, when an identical cache is there, reused from) TFRecord shards under `cache_dir`.
    `frozen_part` must be frozen (BatchNorm in inference mode): see model.split_at_cut.
    """
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, got {store_dtype!r}")
    pipeline = _this_pipeline(strategy)
    shape = tuple(int(d) for d in frozen_part.output.shape[1:])
    layouts = {s.name: CacheLayout(shape, s.views, store_dtype) for s in sources}
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
            caches[source.name] = extractor.to_memory(source, layout, pipeline, manifest)
        else:
            caches[source.name] = extractor.to_disk(source, layout, pipeline, manifest,
                                                    cache_dir)
    return caches


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e8 else f"{num_bytes / 1e6:.1f} MB"


def _this_pipeline(strategy: tf.distribute.Strategy) -> Pipeline:
    """The InputContext tf.distribute gives this process's input pipeline."""
    contexts = []

    def capture(context):
        contexts.append(context)
        return tf.data.Dataset.range(1)

    strategy.distribute_datasets_from_function(capture)
    if len(contexts) != 1:
        raise NotImplementedError(f"--cache_features supports one input pipeline per process; "
                                  f"this strategy has {len(contexts)}")
    return Pipeline(contexts[0].input_pipeline_id, contexts[0].num_input_pipelines)


class _Extractor:
    """Runs the frozen part over a split on every replica, batch by batch."""

    def __init__(self, strategy, frozen_part, store_dtype, per_replica_batch, jit_compile):
        self._strategy = strategy
        self._frozen_part = frozen_part
        self._store_dtype = store_dtype
        self._batch = per_replica_batch
        self._jit_compile = jit_compile
        self._steps = {}

    def to_memory(self, source: SplitSource, layout: CacheLayout, pipeline: Pipeline,
                  manifest: Manifest) -> FeatureCache:
        capacity = pipeline.share(source.records, self._global_batch)
        features = np.empty((capacity * layout.views, *layout.shape), layout.dtype)
        labels = np.empty((capacity,), np.int32)
        count = 0
        for batch_features, batch_labels in self._run(source, layout, manifest):
            end = count + len(batch_labels)
            features[count * layout.views:end * layout.views] = batch_features.reshape(
                -1, *layout.shape)
            labels[count:end] = batch_labels
            count = end
        tensors = (tf.constant(features[:count * layout.views]), tf.constant(labels[:count]))
        return FeatureCache(source.name, layout, count, source.records, pipeline, MEMORY,
                            tensors=tensors)

    def to_disk(self, source: SplitSource, layout: CacheLayout, pipeline: Pipeline,
                manifest: Manifest, cache_dir: str) -> FeatureCache:
        fingerprint = _fingerprint(self._frozen_part, source, layout, pipeline, manifest)
        prefix = f"{source.name}-pipeline{pipeline.index}of{pipeline.count}-"
        directory = posixpath.join(cache_dir, prefix + fingerprint[:16])
        info = _read_info(directory)
        if info is not None and info["fingerprint"] == fingerprint:
            logging.info("feature cache: reusing %s (%d faces)", directory, info["records"])
            return _disk_cache(source, layout, pipeline, directory, info)
        _remove_stale(cache_dir, prefix, directory)
        tf.io.gfile.makedirs(directory)
        writer = _ShardWriter(directory, source.name,
                              max(1, SHARD_BYTES // layout.face_bytes))
        for batch_features, batch_labels in self._run(source, layout, manifest):
            writer.write(batch_features, batch_labels)
        info = {"fingerprint": fingerprint, "records": writer.records,
                "files": [posixpath.basename(f) for f in writer.close()],
                "layout": dataclasses.asdict(layout)}
        # Written last: a directory without it is an interrupted cache and is rebuilt.
        with tf.io.gfile.GFile(posixpath.join(directory, CACHE_INFO_FILENAME), "w") as f:
            f.write(json.dumps(info, indent=1) + "\n")
        return _disk_cache(source, layout, pipeline, directory, info)

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
                images, labels, weights = batch
                return self._strategy.run(lambda x, y, w: (features_of(x), y, w),
                                          args=(images, labels, weights))

            self._steps[views] = step
        return self._steps[views]

    def _run(self, source: SplitSource, layout: CacheLayout, manifest: Manifest):
        """Yields (features [n,views,H,W,C], labels [n]) numpy batches of this pipeline's
        faces, padding dropped."""
        strategy, replicas = self._strategy, self._strategy.num_replicas_in_sync

        def dataset_fn(context):
            return eval_dataset(source.files, manifest.image_size, manifest.num_classes,
                                source.records, self._batch, replicas, context)

        step = self._step(layout.views)
        done, started, reported = 0, time.monotonic(), time.monotonic()
        with naming_corrupt_files(source.files, manifest.image_size, manifest.num_classes):
            for batch in strategy.distribute_datasets_from_function(dataset_fn):
                outputs = [strategy.experimental_local_results(o) for o in step(batch)]
                for features, labels, weights in zip(*outputs, strict=True):
                    real = weights.numpy() > 0
                    done += int(real.sum())
                    yield features.numpy()[real], labels.numpy()[real]
                if time.monotonic() - reported > PROGRESS_SECONDS:
                    reported = time.monotonic()
                    logging.info("caching %s features: %d faces in %.0fs", source.name, done,
                                 reported - started)
        logging.info("cached %s features of %d faces in %.1fs", source.name, done,
                     time.monotonic() - started)


class _ShardWriter:
    """Writes (features, label) records to numbered shards of `per_shard` records each."""

    def __init__(self, directory: str, split: str, per_shard: int):
        self._directory, self._split, self._per_shard = directory, split, per_shard
        self._files, self._writer, self.records = [], None, 0

    def write(self, features: np.ndarray, labels: np.ndarray) -> None:
        for face, label in zip(features, labels, strict=True):
            if self.records % self._per_shard == 0:
                self._next_shard()
            example = tf.train.Example(features=tf.train.Features(feature={
                _FEATURES_KEY: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[np.ascontiguousarray(face).tobytes()])),
                _LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
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


def _fingerprint(frozen_part: keras.Model, source: SplitSource, layout: CacheLayout,
                 pipeline: Pipeline, manifest: Manifest) -> str:
    """Changes when anything the cached values depend on changes."""
    digest = hashlib.sha256()
    files = [(path, tf.io.gfile.stat(path).length) for path in source.files]
    digest.update(json.dumps({
        "split": source.name, "files": files, "image_size": manifest.image_size,
        "layout": dataclasses.asdict(layout), "pipeline": dataclasses.asdict(pipeline),
        "model": [(w.path, list(w.shape)) for w in frozen_part.weights],
    }, sort_keys=True).encode())
    for weight in frozen_part.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


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


def _disk_cache(source: SplitSource, layout: CacheLayout, pipeline: Pipeline, directory: str,
                info: Mapping) -> FeatureCache:
    files = tuple(posixpath.join(directory, name) for name in info["files"])
    return FeatureCache(source.name, layout, int(info["records"]), source.records, pipeline,
                        directory, files=files)
