"""The manifest check: a data directory the trainer can read, every shard as written."""

import pytest

from beam_preprocess.record_format import ManifestError
from tests.support.trainer_data import balanced_counts, write_data_dir
from trainer.data.manifest import data_digest, load_manifest

COUNTS = {"train": balanced_counts(2), "validation": balanced_counts(1),
          "test": balanced_counts(1)}


def test_a_complete_data_dir_loads(tmp_path):
    write_data_dir(tmp_path, COUNTS, image_size=32)
    manifest = load_manifest(str(tmp_path))
    assert manifest.image_size == 32 and manifest.splits["train"].records == 14


def test_missing_manifest_or_split_is_named(tmp_path):
    with pytest.raises(ManifestError, match="manifest.json not found"):
        load_manifest(str(tmp_path))
    write_data_dir(tmp_path, {"train": balanced_counts(1), "validation": balanced_counts(1)},
                   image_size=32, num_shards=1)
    with pytest.raises(ManifestError, match="split 'test' has no records"):
        load_manifest(str(tmp_path))


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(b""), "0 bytes, but the Beam job wrote"),
    (lambda path: path.write_bytes(path.read_bytes()[:-10]), "truncated or replaced"),
    (lambda path: path.unlink(), "missing; the manifest lists it with 7 records"),
])
def test_an_empty_truncated_or_missing_train_shard_stops_the_job_naming_it(tmp_path, damage,
                                                                          message):
    write_data_dir(tmp_path, COUNTS, image_size=32)
    shard = tmp_path / "train-00001-of-00002.tfrecord"
    damage(shard)
    with pytest.raises(ManifestError, match=message) as error:
        load_manifest(str(tmp_path))
    assert str(shard) in str(error.value)


def test_the_data_digest_follows_the_records_content(tmp_path):
    first = write_data_dir(tmp_path / "a", COUNTS, image_size=32, seed=0)
    same = write_data_dir(tmp_path / "b", COUNTS, image_size=32, seed=0)
    other = write_data_dir(tmp_path / "c", COUNTS, image_size=32, seed=1)
    assert data_digest(first) == data_digest(same) != data_digest(other)
