"""The Keras 3 VGGFace2 ResNet-50 has the original architecture, and the original preprocessing."""

import keras
import numpy as np
import pytest

from tests.support.keras2_weight_files import reference_layers
from trainer.vggface import layout
from trainer.vggface.network import VGGFace2Preprocess, preprocess_input, resnet50

CONFIG_KEYS = ("filters", "kernel_size", "strides", "padding", "use_bias", "epsilon", "axis",
               "pool_size")


@pytest.fixture(scope="module")
def notop():
    return resnet50(weights=None)


def _inbound_names(layer):
    node = layer._inbound_nodes[0]
    return [t._keras_history.operation.name for t in node.input_tensors]


def _describe(layer):
    config = layer.get_config()
    if "axis" in config:  # Keras 3 says -1 where Keras 2 said [3]: the same axis of NHWC
        config["axis"] = [config["axis"] % 4]
    return {
        "name": layer.name,
        "class": type(layer).__name__,
        "inbound": _inbound_names(layer),
        "weights": [[w.name, list(w.shape)] for w in layer.weights],
        "config": {k: list(v) if isinstance(v, tuple) else v
                   for k, v in config.items() if k in CONFIG_KEYS},
    }


def _expected(reference):
    rename = layout.keras_name
    return {
        "name": rename(reference["name"]),
        "class": reference["class"],
        "inbound": [rename(n) for n in reference.get("inbound", [])],
        "weights": [[suffix.split(":")[0], shape]
                    for suffix, shape in reference.get("weights", [])],
        "config": reference.get("config", {}),
    }


def test_layers_equal_the_original_after_renaming(notop):
    reference = reference_layers()
    assert len(notop.layers) == len(reference) == 174
    for layer, ref in zip(notop.layers, reference, strict=True):
        assert _describe(layer) == _expected(ref)


def test_name_rule_is_reversible_and_collision_free():
    originals = layout.original_layer_names(include_top=True)
    by_keras_name = layout.original_names_by_keras_name()
    assert len(by_keras_name) == len(originals)
    assert all("/" not in name for name in by_keras_name)
    assert by_keras_name["conv2_1_1x1_increase_bn"] == "conv2_1_1x1_increase/bn"
    assert by_keras_name["conv1_7x7_s2"] == "conv1/7x7_s2"


def test_parameter_counts(notop):
    assert notop.count_params() == 23_561_152
    assert resnet50(weights=None, include_top=True).count_params() == 41_246_071


@pytest.mark.parametrize(("kwargs", "shape"), [
    ({}, (None, 1, 1, 2048)),
    ({"pooling": "avg"}, (None, 2048)),
    ({"pooling": "max"}, (None, 2048)),
    ({"include_top": True}, (None, 8631)),
])
def test_output_shapes(kwargs, shape):
    model = resnet50(weights=None, **kwargs)
    assert model.output.shape == shape


def test_top_is_the_softmax_classifier():
    model = resnet50(weights=None, include_top=True)
    classifier = model.get_layer("classifier")
    assert model.layers[-1] is classifier
    assert classifier.get_config()["activation"] == "softmax"
    assert model.get_layer("flatten_1") is model.layers[-2]


def test_activation_46_is_the_input_of_block_conv5_3(notop):
    assert layout.block_input_activation("conv5_3") == "activation_46"
    assert _inbound_names(notop.get_layer("conv5_3_1x1_reduce")) == ["activation_46"]
    assert _inbound_names(notop.get_layer("activation_46")) == ["add_15"]


def test_bad_pooling_is_rejected():
    with pytest.raises(ValueError, match="pooling"):
        resnet50(weights=None, pooling="mean")


def test_preprocess_input_numpy_is_bgr_minus_version2_means():
    rgb = np.array([[[[10.0, 20.0, 30.0]]]], dtype=np.float32)
    out = preprocess_input(rgb)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out[0, 0, 0], [30 - 91.4953, 20 - 103.8827, 10 - 131.0912],
                               rtol=1e-6)


def test_preprocess_input_tensor_matches_numpy():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3)).astype(np.uint8)
    out = preprocess_input(keras.ops.convert_to_tensor(rgb))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), preprocess_input(rgb), rtol=1e-6)


def test_preprocess_layer_grey_becomes_equal_bgr_minus_means():
    grey = np.full((1, 2, 2, 1), 200, dtype=np.uint8)
    out = keras.ops.convert_to_numpy(VGGFace2Preprocess()(grey))
    assert out.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(out[0, 0, 0], [200 - 91.4953, 200 - 103.8827, 200 - 131.0912],
                               rtol=1e-6)


def test_preprocess_layer_rgb_equals_preprocess_input():
    rgb = np.random.default_rng(1).uniform(0, 255, (2, 3, 3, 3)).astype(np.float32)
    out = keras.ops.convert_to_numpy(VGGFace2Preprocess()(rgb))
    np.testing.assert_allclose(out, preprocess_input(rgb), rtol=1e-6)
