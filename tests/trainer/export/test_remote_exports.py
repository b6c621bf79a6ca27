"""Exports on Cloud Storage (the GCS emulator here) load through the one loader, so
`python -m trainer.evaluate --model gs://...` and `trainer.predict` read them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_BUCKET
from tests.support.trainer_data import REPO_ROOT, balanced_counts, trainer_env, write_data_dir
from tests.trainer.conftest import RECORDS_SIDE


def upload_tree(client, local: Path, prefix: str) -> None:
    bucket = client.bucket(TEST_BUCKET)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            bucket.blob(f"{prefix}/{path.relative_to(local)}").upload_from_filename(str(path))


def evaluate(model: str, data_dir: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "trainer.evaluate", f"--model={model}",
                             f"--data_dir={data_dir}", "--split=test"], cwd=REPO_ROOT,
                            env=trainer_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout[result.stdout.index("{"):])


@pytest.mark.slow
@pytest.mark.parametrize("export", ["model.keras", "saved_model"])
def test_evaluate_reads_an_export_from_cloud_storage(export_dir, gcs_client, tmp_path, export):
    data = tmp_path / "records"
    write_data_dir(data, {"train": balanced_counts(1), "validation": balanced_counts(1),
                          "test": balanced_counts(3)}, image_size=RECORDS_SIDE, num_shards=1)
    upload_tree(gcs_client, export_dir.path, f"runs/{export}/export")
    remote = evaluate(f"gs://{TEST_BUCKET}/runs/{export}/export/{export}", data)
    local = evaluate(str(export_dir.path / export), data)
    assert remote["records"] == local["records"] == 21
    assert remote["accuracy"] == local["accuracy"]
    assert remote["loss"] == pytest.approx(local["loss"], rel=1e-6)


def test_a_missing_remote_export_is_named(gcs_emulator):
    from trainer.export.loader import ModelLoadError, load_exported

    with pytest.raises(ModelLoadError, match=f"gs://{gcs_emulator}/nothing/model.keras: no such"):
        load_exported(f"gs://{gcs_emulator}/nothing/model.keras")


class _ListedObject:
    def __init__(self, name: str):
        self.name = name

    def download_to_filename(self, filename: str) -> None:
        Path(filename).write_bytes(b"x")


class _BucketWithHostileNames:
    """Real Cloud Storage accepts any UTF-8 object name, `..` included; the emulator's server
    drops the connection on such an upload, so this listing stands in for the bucket."""

    def blob(self, name):
        return type("Missing", (), {"exists": lambda self: False})()

    def list_blobs(self, prefix: str):
        return [_ListedObject(prefix + "saved_model.pb"),
                _ListedObject(prefix + "../../../escaped.txt")]


def test_an_object_name_that_climbs_out_of_the_download_folder_is_refused(monkeypatch,
                                                                         tmp_path):
    from trainer.export import remote
    from trainer.export.loader import ModelLoadError, load_exported

    monkeypatch.setattr(remote, "_client",
                        lambda: type("Client", (), {"bucket": lambda self, name:
                                                    _BucketWithHostileNames()})())
    monkeypatch.setattr(remote.tempfile, "tempdir", str(tmp_path / "downloads"))
    (tmp_path / "downloads").mkdir()
    with pytest.raises(ModelLoadError, match=r"'../../../escaped.txt' would be written "
                       "outside the download folder"):
        load_exported("gs://bucket/hostile/model")
    assert not (tmp_path / "escaped.txt").exists()
