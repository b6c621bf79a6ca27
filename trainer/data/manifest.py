"""The manifest of a preprocessed data directory, checked against what the trainer can read.

Every listed shard must exist with the size the Beam job recorded: an empty or truncated shard
stops the job here, naming the file, instead of starving (or hanging) the input pipeline.
"""

from __future__ import annotations

import hashlib
import posixpath

import tensorflow as tf

from beam_preprocess.record_format import (
    CHANNELS,
    IMAGE_ENCODING,
    SPLITS,
    Manifest,
    ManifestError,
    read_manifest,
)


def load_manifest(data_dir: str) -> Manifest:
    """The manifest of `data_dir`, its splits and shard files checked.

    Raises ManifestError if it is missing, of an unknown schema or encoding, lacks a split, or
    a shard file is missing or not the size the Beam job wrote.
    """
    manifest = read_manifest(data_dir)
    where = posixpath.join(data_dir, "manifest.json")
    if manifest.encoding != IMAGE_ENCODING or manifest.channels != CHANNELS:
        raise ManifestError(f"{where}: records are {manifest.encoding} with "
                            f"{manifest.channels} channel(s); the trainer reads {IMAGE_ENCODING} "
                            f"with {CHANNELS}.")
    for split in SPLITS:
        stats = manifest.splits.get(split)
        if stats is None or stats.records == 0 or not stats.shards:
            raise ManifestError(f"{where}: split {split!r} has no records; the trainer needs "
                                f"all of {', '.join(SPLITS)}.")
        if len(stats.class_counts) != manifest.num_classes:
            raise ManifestError(f"{where}: split {split!r} has {len(stats.class_counts)} class "
                                f"counts for {manifest.num_classes} classes.")
        _check_shards(manifest, split, data_dir)
    return manifest


def _check_shards(manifest: Manifest, split: str, data_dir: str) -> None:
    stats = manifest.splits[split]
    if sum(shard.records for shard in stats.shards) != stats.records:
        raise ManifestError(f"{data_dir}/manifest.json: the {split} shards list "
                            f"{sum(s.records for s in stats.shards)} records, the split "
                            f"{stats.records}.")
    for shard in stats.shards:
        path = posixpath.join(data_dir, shard.name)
        try:
            size = tf.io.gfile.stat(path).length
        except tf.errors.NotFoundError:
            raise ManifestError(f"{path}: missing; the manifest lists it with {shard.records} "
                                "records. Re-run beam_preprocess.") from None
        if size != shard.bytes:
            raise ManifestError(f"{path}: {size} bytes, but the Beam job wrote {shard.bytes} "
                                f"({shard.records} records); the file was truncated or "
                                "replaced. Re-run beam_preprocess.")


def data_digest(manifest: Manifest) -> str:
    """A digest of the records' content (the shard hashes the Beam job recorded)."""
    digest = hashlib.sha256()
    for split in SPLITS:
        for shard in manifest.splits[split].shards:
            digest.update(f"{split}/{shard.name}/{shard.sha256}\n".encode())
    return digest.hexdigest()
