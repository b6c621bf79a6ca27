"""Loading, checking, saving and fetching keras-vggface weight files."""

import functools
import http.server
import shutil
import socket
import threading
import time

import h5py
import numpy as np
import pytest

from tests.support.keras2_weight_files import random_weights, reference_layers, write_keras2_file
from trainer.vggface import layout
from trainer.vggface.download import WEIGHTS_URLS, WeightsUnavailableError, fetch_vggface_weights
from trainer.vggface.network import resnet50, save_vggface_h5
from trainer.vggface.weight_files import WeightFileError, load_vggface_weights, read_keras2_weights

FORWARD_SIZE = 197  # the smallest input the fixed 7x7 avg_pool accepts


@pytest.fixture(scope="module")
def notop_weights():
    return random_weights(include_top=False, seed=0)


@pytest.fixture(scope="module")
def notop_file(tmp_path_factory, notop_weights):
    path = tmp_path_factory.mktemp("weights") / "notop.h5"
    write_keras2_file(path, notop_weights, style="bytes")
    return path


@pytest.fixture(scope="module")
def notop_model():
    return resnet50(weights=None)


def _assert_model_holds(model, weights):
    """Every weighted layer of `model` holds exactly (bitwise) the arrays of `weights`."""
    checked = 0
    for original, arrays in weights.items():
        if not arrays:
            continue
        layer = model.get_layer(layout.keras_name(original))
        values = {w.name: w.numpy() for w in layer.weights}
        for weight_name, expected in arrays:
            key = weight_name.rsplit("/", 1)[-1].split(":")[0]
            np.testing.assert_array_equal(values[key], expected, err_msg=weight_name)
            checked += 1
    assert checked == sum(len(a) for a in weights.values())


def test_helper_reproduces_the_nesting_trap(notop_file):
    with h5py.File(notop_file, "r") as f:
        assert sorted(f["conv1/7x7_s2"].keys()) == ["bn", "conv1"]
        assert f["conv1/7x7_s2/conv1/7x7_s2/kernel:0"].shape == (7, 7, 3, 64)
        assert f["activation_1"].attrs["weight_names"].dtype == np.float64


@pytest.mark.parametrize("variant", [
    {"style": "bytes"},
    {"style": "str"},
    {"style": "bytes", "split_layer_names": 3, "extra_group": True},
    {"style": "str", "split_layer_names": 2, "extra_group": True},
])
def test_loading_keras2_layouts_gives_identical_weights(tmp_path, notop_weights, notop_model,
                                                        variant):
    path = tmp_path / "weights.h5"
    write_keras2_file(path, notop_weights, **variant)
    loaded = load_vggface_weights(notop_model, str(path))
    assert len(loaded) == 106  # 53 conv + 53 BN
    _assert_model_holds(notop_model, notop_weights)


def test_top_file_loads_into_top_model_and_backbone_of_notop_model(tmp_path):
    weights = random_weights(include_top=True, seed=1)
    path = tmp_path / "top.h5"
    write_keras2_file(path, weights, style="str")
    top_model = resnet50(weights=str(path), include_top=True)
    _assert_model_holds(top_model, weights)
    notop_model = resnet50(weights=str(path))  # documented: the classifier is skipped
    backbone_only = {name: arrays for name, arrays in weights.items() if name != "classifier"}
    _assert_model_holds(notop_model, backbone_only)


def test_notop_file_into_top_model_fails_naming_the_classifier(notop_file):
    with pytest.raises(WeightFileError, match=r"missing from the file \(1\): classifier"):
        resnet50(weights=str(notop_file), include_top=True)


def _unchanged_after_failed_load(model, path, match):
    before = [w.numpy() for w in model.weights]
    with pytest.raises(WeightFileError, match=match):
        load_vggface_weights(model, str(path))
    for old, variable in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, variable.numpy())


def test_missing_layer_is_listed_and_nothing_loads(tmp_path, notop_weights, notop_model):
    names = [n for n in notop_weights if n != "conv3_2_3x3/bn"]
    path = tmp_path / "missing.h5"
    write_keras2_file(path, notop_weights, layer_names=names)
    _unchanged_after_failed_load(notop_model, path, r"missing from the file \(1\): conv3_2_3x3/bn")


def test_wrong_shape_is_listed(tmp_path, notop_weights, notop_model):
    broken = dict(notop_weights)
    broken["conv2_1_1x1_proj"] = [("conv2_1_1x1_proj/kernel:0",
                                   np.zeros((1, 1, 64, 128), np.float32))]
    path = tmp_path / "shape.h5"
    write_keras2_file(path, broken)
    _unchanged_after_failed_load(notop_model, path,
                                 r"(?s)shapes \(1\): conv2_1_1x1_proj: .*\(1, 1, 64, 256\).*"
                                 r"\(1, 1, 64, 128\)")


def test_extra_weighted_layer_is_listed(tmp_path, notop_weights, notop_model):
    extra = {**notop_weights, "conv6_1_3x3": [("conv6_1_3x3/kernel:0", np.zeros((1,), "f4"))]}
    path = tmp_path / "extra.h5"
    write_keras2_file(path, extra)
    _unchanged_after_failed_load(notop_model, path, r"not in the model \(1\): conv6_1_3x3")


def test_truncated_file_is_reported(tmp_path, notop_file, notop_model):
    path = tmp_path / "truncated.h5"
    path.write_bytes(notop_file.read_bytes()[: notop_file.stat().st_size // 2])
    _unchanged_after_failed_load(notop_model, path, "truncated.h5 is not a readable HDF5")


def test_non_hdf5_file_is_reported(tmp_path, notop_model):
    path = tmp_path / "weights.h5"
    path.write_text("<html>Not Found</html>")
    _unchanged_after_failed_load(notop_model, path, "is not a readable HDF5 weight file")


def test_missing_file_is_reported(tmp_path, notop_model):
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        load_vggface_weights(notop_model, str(tmp_path / "nowhere.h5"))


def test_saved_file_has_the_original_layout_and_round_trips(tmp_path, notop_file, notop_weights):
    model = resnet50(weights=str(notop_file))
    path = tmp_path / "saved.h5"
    save_vggface_h5(model, str(path))
    reference = reference_layers()
    with h5py.File(path, "r") as f:
        # Keras 2's loader pairs the weighted layers of `layer_names` with the model's by position,
        # and each layer's weights by `weight_names` order: both must be the original's.
        assert [n.decode() for n in f.attrs["layer_names"]] == [r["name"] for r in reference]
        assert f.attrs["keras_version"].decode().startswith("2.")  # Keras 2 calls .decode()
        for ref in reference:
            stored = [n.decode() for n in f[ref["name"]].attrs["weight_names"]]
            assert stored == [f"{ref['name']}/{suffix}" for suffix, _ in ref.get("weights", [])]
    assert list(read_keras2_weights(str(path))) == [n for n, a in notop_weights.items() if a]
    _assert_model_holds(resnet50(weights=str(path)), notop_weights)


def test_saving_a_model_with_top_writes_the_top_layout(tmp_path):
    model = resnet50(weights=None, include_top=True)
    path = tmp_path / "top.h5"
    save_vggface_h5(model, str(path))
    names = list(read_keras2_weights(str(path), with_values=False))
    assert names[-1] == "classifier"
    np.testing.assert_array_equal(
        resnet50(weights=str(path), include_top=True).get_layer("classifier").kernel.numpy(),
        model.get_layer("classifier").kernel.numpy())


# --- an independent NumPy forward pass of the original network -------------------------------

def _same_padding(size, kernel, stride):
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2  # TF 'same': the extra pixel goes after


def _conv(x, kernel, stride, padding):
    k = kernel.shape[0]
    if padding == "same":
        before, after = _same_padding(x.shape[1], k, stride)
        x = np.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # N, H', W', C, k, k
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel, optimize=True)


def _batch_norm(x, gamma, beta, mean, variance):
    return (x - mean) / np.sqrt(variance + 1e-3) * gamma + beta


def _max_pool_3x3_s2_valid(x):
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))
    return windows[:, ::2, ::2].max(axis=(-2, -1))


def _numpy_resnet50(x, weights):
    w = {name: [a.astype(np.float64) for _, a in arrays] for name, arrays in weights.items()}

    def conv_bn(x, name, stride=1, padding="valid"):
        return _batch_norm(_conv(x, w[name][0], stride, padding), *w[f"{name}/bn"])

    relu = functools.partial(np.maximum, 0.0)
    x = relu(conv_bn(x, "conv1/7x7_s2", 2, "same"))
    x = _max_pool_3x3_s2_valid(x)
    for stage, blocks in ((2, 3), (3, 4), (4, 6), (5, 3)):
        for block in range(1, blocks + 1):
            prefix = f"conv{stage}_{block}"
            stride = 2 if block == 1 and stage > 2 else 1
            y = relu(conv_bn(x, f"{prefix}_1x1_reduce", stride))
            y = relu(conv_bn(y, f"{prefix}_3x3", 1, "same"))
            y = conv_bn(y, f"{prefix}_1x1_increase")
            shortcut = conv_bn(x, f"{prefix}_1x1_proj", stride) if block == 1 else x
            x = relu(y + shortcut)
    assert x.shape[1:3] == (7, 7)
    return x.mean(axis=(1, 2), keepdims=True)  # 7x7 avg_pool, valid


def test_forward_pass_equals_numpy_reimplementation(notop_file, notop_weights):
    model = resnet50(weights=str(notop_file), input_shape=(FORWARD_SIZE, FORWARD_SIZE, 3))
    x = np.random.default_rng(2).normal(0, 50, (1, FORWARD_SIZE, FORWARD_SIZE, 3))
    expected = _numpy_resnet50(x, notop_weights)
    got = model.predict(x.astype(np.float32), verbose=0)
    assert got.shape == expected.shape == (1, 1, 1, 2048)
    relative = np.abs(got - expected).max() / np.abs(expected).max()
    assert relative < 1e-4


# --- fetching the published files --------------------------------------------------------------

def _refused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: connecting is refused at once


def test_offline_download_fails_fast_naming_url_and_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as error:
        resnet50(weights="vggface2")  # the real URL: no route to GitHub from here
    assert time.monotonic() - start < 60  # a generous bound: what matters is not hanging
    message = str(error.value)
    assert WEIGHTS_URLS[False] in message
    assert "weights=None" in message and "gs://" in message
    assert str(tmp_path / "keras_home" / "models" / "vggface") in message
    assert not list((tmp_path / "keras_home" / "models" / "vggface").iterdir())


def test_refused_connection_fails_with_the_message(tmp_path):
    url = f"http://127.0.0.1:{_refused_port()}/rcmalli_vggface_tf_notop_resnet50.h5"
    with pytest.raises(WeightsUnavailableError, match=r"(?s)Could not download.*127\.0\.0\.1"):
        fetch_vggface_weights(url=url, cache_dir=str(tmp_path), timeout=5)


def test_stalled_server_times_out_instead_of_hanging(tmp_path):
    # The port accepts connections (kernel backlog) but never answers: only the timeout ends it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/w.h5"
        outcome = []

        def fetch():
            try:
                fetch_vggface_weights(url=url, cache_dir=str(tmp_path), timeout=1)
            except WeightsUnavailableError as err:
                outcome.append(err)

        worker = threading.Thread(target=fetch, daemon=True)
        worker.start()
        worker.join(timeout=60)  # fail, rather than hang the suite, if the timeout is ignored
    assert outcome and "timed out" in str(outcome[0])


@pytest.fixture()
def file_server(tmp_path):
    """Serves tmp_path/served over HTTP on 127.0.0.1; yields (directory, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_is_checked_cached_and_reused(file_server, notop_file, tmp_path):
    served, base = file_server
    shutil.copy(notop_file, served / "rcmalli_vggface_tf_notop_resnet50.h5")
    url = f"{base}/rcmalli_vggface_tf_notop_resnet50.h5"
    cache = tmp_path / "cache"
    path = fetch_vggface_weights(url=url, cache_dir=str(cache), timeout=5)
    assert path == str(cache / "rcmalli_vggface_tf_notop_resnet50.h5")
    with open(path, "rb") as cached:
        assert cached.read() == notop_file.read_bytes()
    (served / "rcmalli_vggface_tf_notop_resnet50.h5").unlink()  # the next call must not need it
    assert fetch_vggface_weights(url=url, cache_dir=str(cache), timeout=5) == path
    assert [p.name for p in cache.iterdir()] == ["rcmalli_vggface_tf_notop_resnet50.h5"]


class _CutOffHandler(http.server.BaseHTTPRequestHandler):
    """Declares 1000 bytes, sends 10 and hangs up, like a dropped download."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"\x89HDF\r\n\x1a\n..")
        self.close_connection = True


def test_interrupted_download_is_reported_and_not_cached(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutOffHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(WeightsUnavailableError, match="stopped after 10 of 1000"):
            fetch_vggface_weights(url=f"http://127.0.0.1:{server.server_address[1]}/w.h5",
                                  cache_dir=str(tmp_path), timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert not list(tmp_path.iterdir())


def test_sha256_pin_rejects_a_different_file_and_caches_nothing(file_server, notop_file,
                                                                tmp_path):
    served, base = file_server
    shutil.copy(notop_file, served / "w.h5")
    with pytest.raises(WeightFileError, match="sha256"):
        fetch_vggface_weights(url=f"{base}/w.h5", cache_dir=str(tmp_path / "c"), sha256="00" * 32)
    assert not list((tmp_path / "c").iterdir())


def test_download_of_a_file_that_is_not_the_weights_is_rejected(file_server, tmp_path):
    served, base = file_server
    (served / "w.h5").write_text("<html>rate limited</html>")
    with pytest.raises(WeightFileError, match="not a readable HDF5"):
        fetch_vggface_weights(url=f"{base}/w.h5", cache_dir=str(tmp_path / "c"))
    assert not list((tmp_path / "c").iterdir())


def test_download_with_the_wrong_top_is_rejected(file_server, notop_file, tmp_path):
    served, base = file_server
    shutil.copy(notop_file, served / "w.h5")
    with pytest.raises(WeightFileError, match="with top; layers that differ"):
        fetch_vggface_weights(include_top=True, url=f"{base}/w.h5", cache_dir=str(tmp_path))


def test_cached_file_of_the_wrong_size_is_reported(tmp_path, notop_file, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cache = tmp_path / "models" / "vggface"
    cache.mkdir(parents=True)
    shutil.copy(notop_file, cache / "rcmalli_vggface_tf_notop_resnet50.h5")
    with pytest.raises(WeightFileError, match="(?s)delete it.*expected 94694792"):
        fetch_vggface_weights()


def test_remote_paths_go_through_tf_io_gfile(notop_file, notop_weights):
    # TF's ram:// file system stands in for gs:// (same tf.io.gfile code path, no cloud).
    model = resnet50(weights=str(notop_file))
    save_vggface_h5(model, "ram://weights/saved.h5")
    _assert_model_holds(resnet50(weights="ram://weights/saved.h5"), notop_weights)
    with pytest.raises(FileNotFoundError, match="ram://weights/none.h5"):
        resnet50(weights="ram://weights/none.h5")
