"""Exports on Cloud Storage, fetched to local files for the loader.

The loader reads every export from a local path: Keras reads .keras archives as local zip
files, and LiteRT and onnxruntime read local files. A gs:// export (a file, or a SavedModel
directory) is downloaded with the google-cloud-storage client, which honours
STORAGE_EMULATOR_HOST (TensorFlow's own gs:// file system has Google's endpoints built in, so
an emulator cannot stand in for it), and uses the machine's Google credentials otherwise.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile

from beam_preprocess.user_error import UserError


def is_remote(path: str) -> bool:
    return path.startswith("gs://")


def _bucket_and_name(path: str) -> tuple[str, str]:
    bucket, _, name = path.removeprefix("gs://").partition("/")
    return bucket, name.rstrip("/")


def _client():
    from google.cloud import storage

    return storage.Client()


def download(path: str, destination: str) -> bool:
    """Copies the file or directory tree at gs:// `path` into `destination` (a file path for a
    file, a directory for a tree); False when nothing is there."""
    bucket_name, name = _bucket_and_name(path)
    bucket = _client().bucket(bucket_name)
    blob = bucket.blob(name)
    if name and blob.exists():
        blob.download_to_filename(destination)
        return True
    found = False
    for item in bucket.list_blobs(prefix=name + "/"):
        target = _confined(destination, item.name[len(name) + 1:], path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not item.name.endswith("/"):
            item.download_to_filename(target)
            found = True
    return found


class UnsafeObjectNameError(UserError, ValueError):
    """An object whose name would be written outside the download folder."""


def _confined(destination: str, relative: str, path: str) -> str:
    """destination/relative, normalised; UnsafeObjectNameError if it leaves destination
    (`..` in an object name)."""
    root = os.path.realpath(destination)
    target = os.path.realpath(os.path.join(root, posixpath.normpath(relative).lstrip("/")))
    if os.path.commonpath([root, target]) != root:
        raise UnsafeObjectNameError(f"{path}: the object {relative!r} would be written outside "
                                    "the download folder; refusing this export")
    return target


@contextlib.contextmanager
def local_copy(path: str):
    """`path` itself when local; for gs://, a temporary local copy of the file or directory
    and, beside it, of the labels.json that .keras and .tflite exports keep next to them.
    Yields None when nothing is at `path`."""
    if not is_remote(path):
        yield path if os.path.exists(path) else None
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, posixpath.basename(path.rstrip("/")))
        if not download(path.rstrip("/"), local):
            yield None
            return
        labels = posixpath.join(posixpath.dirname(path.rstrip("/")), "labels.json")
        download(labels, os.path.join(tmp, "labels.json"))
        yield local
