"""Fetching the published keras-vggface v2.0 ResNet-50 weight files, with a local cache.

Files are cached where keras-vggface put them, `<Keras home>/models/vggface/` (Keras home is
$KERAS_HOME or ~/.keras). A file is only moved into the cache after its size and HDF5 structure
were checked, so an interrupted download never poisons the cache. Without network access the
download fails within `timeout` seconds with a message naming the URL and the alternatives.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request

from absl import logging

from beam_preprocess.user_error import UserError
from trainer.vggface import layout
from trainer.vggface.weight_files import (
    WeightFileError,
    WeightFileNotFoundError,
    read_keras2_weights,
)

_RELEASE = "https://github.com/rcmalli/keras-vggface/releases/download/v2.0/"
WEIGHTS_URLS = {
    False: _RELEASE + "rcmalli_vggface_tf_notop_resnet50.h5",
    True: _RELEASE + "rcmalli_vggface_tf_resnet50.h5",
}
# No hash is published. The notop size is known (keras-vggface issue reports); the top one not.
KNOWN_SIZES = {False: 94_694_792}
DEFAULT_TIMEOUT_S = 15.0
_CHUNK_BYTES = 1 << 20


class WeightsUnavailableError(UserError, OSError):
    """The published weights could not be downloaded (no network, HTTP error, ...)."""


def keras_cache_dir() -> str:
    """`<Keras home>/models/vggface`, as keras-vggface used (Keras home as Keras resolves it)."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return os.path.join(home, "models", "vggface")


def check_weight_file(path, include_top, expected_size=None, sha256=None) -> None:
    """Raises WeightFileError unless `path` is a complete keras-vggface ResNet-50 weight file."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError as error:
        raise WeightFileNotFoundError(str(error)) from None
    if expected_size is not None and size != expected_size:
        raise WeightFileError(f"{path} has {size} bytes, expected {expected_size}")
    if sha256 is not None:
        digest = _sha256(path)
        if digest != sha256.lower():
            raise WeightFileError(f"{path} has sha256 {digest}, expected {sha256}")
    found = read_keras2_weights(path, with_values=False)
    if not include_top:
        found.pop(layout.CLASSIFIER, None)
    expected = layout.weight_shapes(include_top)
    differing = sorted(name for name in {*found, *expected}
                       if found.get(name) != expected.get(name))
    if differing:
        raise WeightFileError(f"{path} is not the VGGFace2 ResNet-50 "
                              f"{'with' if include_top else 'without'} top; layers that differ "
                              f"({len(differing)}): {', '.join(differing[:12])}")


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unavailable(url, cache_path, reason) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Could not download the VGGFace2 ResNet-50 weights from {url}: {reason}.\n"
        "Alternatives: download that file on a machine with access and either copy it to "
        f"{cache_path} (the cache) or pass its path, local or gs://, as weights=...; "
        "or use weights=None for a randomly initialised backbone.")


def _download(url, destination, timeout, cache_path) -> None:
    """Streams `url` to `destination`, checking the byte count against Content-Length."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, \
                open(destination, "wb") as out:
            declared = response.headers.get("Content-Length")
            shutil.copyfileobj(response, out, _CHUNK_BYTES)
    except (TimeoutError, ConnectionError, urllib.error.URLError,
            http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise _unavailable(url, cache_path, reason) from err
    received = os.path.getsize(destination)
    if declared is not None and received != int(declared):
        raise _unavailable(url, cache_path, f"the transfer stopped after {received} of "
                                            f"{declared} bytes")


def fetch_vggface_weights(include_top=False, sha256=None, cache_dir=None, url=None,
                          timeout=DEFAULT_TIMEOUT_S) -> str:
    """Local path of the published weight file for this top, downloading it once if needed.

    Args:
      include_top: the file with the 8631-way classifier, or the notop file.
      sha256: optional hex digest to pin the file to (none is published).
      cache_dir: defaults to `keras_cache_dir()`.
      url: defaults to the keras-vggface v2.0 release URL for this top.
      timeout: seconds for connecting and for each read; offline this fails fast.
    """
    url = url or WEIGHTS_URLS[include_top]
    cache_dir = cache_dir or keras_cache_dir()
    path = os.path.join(cache_dir, os.path.basename(url))
    expected_size = KNOWN_SIZES.get(include_top) if url == WEIGHTS_URLS[include_top] else None
    if os.path.exists(path):
        try:
            check_weight_file(path, include_top, expected_size, sha256)
        except WeightFileError as err:
            raise WeightFileError(f"Cached weight file is bad; delete it to download again. "
                                  f"{err}") from err
        return path
    os.makedirs(cache_dir, exist_ok=True)
    partial = f"{path}.part{os.getpid()}"
    logging.info("Downloading %s to %s", url, path)
    try:
        _download(url, partial, timeout, path)
        try:
            check_weight_file(partial, include_top, expected_size, sha256)
        except WeightFileError as err:
            raise WeightFileError(f"The file downloaded from {url} is unusable: {err}") from err
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def locate_vggface_weights(path: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                           cache_dir: str | None = None) -> str | None:
    """The notop weight file if it can be had: `path` (when given), else the cache, else a
    download within `timeout` seconds; None when none of them works (offline, say)."""
    if path:
        check_weight_file(path, include_top=False)
        return path
    try:
        return fetch_vggface_weights(include_top=False, cache_dir=cache_dir, timeout=timeout)
    except WeightsUnavailableError as err:
        logging.info("%s", str(err).splitlines()[0])
        return None
