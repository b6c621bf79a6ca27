"""The fine-tuning model: input handling, head, trainable cut, BatchNorm mode and splitting."""

import keras
import numpy as np
import pytest

from tests.support.keras2_weight_files import random_weights, write_keras2_file
from trainer.model import (
    TRAINABLE_FROM_CHOICES,
    SwitchableBatchNormalization,
    build_emotion_model,
    set_trainable,
    split_at_cut,
)
from trainer.vggface import layout

SIZE = 64
CONV5_3_PARAMS = 4_462_592


@pytest.fixture(scope="module")
def model():
    return build_emotion_model(7, image_size=SIZE)


def _faces(n=2, channels=1, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, channels)).astype(np.uint8)


def _count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def _head_params(model):
    return _count(model.get_layer("head_dense").weights + model.get_layer("logits").weights)


def test_logits_are_float32_for_uint8_and_float_faces(model):
    logits = model(_faces())
    assert model.get_layer("logits") is model.layers[-1]
    assert logits.shape == (2, 7) and logits.dtype == "float32"
    np.testing.assert_allclose(model(_faces().astype(np.float32)), logits, rtol=1e-5)


def test_head_shape_and_backbone_size(model):
    assert model.get_layer("head_dense").units == 256
    assert model.count_params() == 23_561_152 + 2048 * 256 + 256 + 256 * 7 + 7


def test_default_cut_trains_block_conv5_3_and_the_head(model):
    set_trainable(model, "conv5_3")
    assert _count(model.trainable_weights) - _head_params(model) == CONV5_3_PARAMS
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert "conv5_3_1x1_reduce" in trainable and "conv5_2_1x1_increase" not in trainable


@pytest.mark.parametrize(("trainable_from", "backbone_params"), [
    ("none", 0),
    # conv5_1: 1x1 1024->512, 3x3 512->512, 1x1 512->2048, projection 1024->2048, BN gamma/beta
    ("conv5_1", 2 * CONV5_3_PARAMS + (1024 * 512 + 9 * 512 * 512 + 512 * 2048 + 1024 * 2048)
     + 2 * (512 + 512 + 2048 + 2048)),
    ("all", 23_561_152 - 2 * 26_560),  # everything but the BN moving statistics
])
def test_trainable_counts_for_other_cuts(model, trainable_from, backbone_params):
    set_trainable(model, trainable_from)
    assert _count(model.trainable_weights) - _head_params(model) == backbone_params


def test_unknown_cut_lists_the_valid_ones(model):
    with pytest.raises(ValueError, match="activation_46.*valid: all, none, conv2_1, .*conv5_3"):
        set_trainable(model, "activation_46")


def test_every_block_name_is_a_valid_cut(model):
    assert set(layout.BLOCK_NAMES) < set(TRAINABLE_FROM_CHOICES)
    for trainable_from in TRAINABLE_FROM_CHOICES:
        set_trainable(model, trainable_from)


def _moving_means(model, names):
    return {n: model.get_layer(n).moving_mean.numpy().copy() for n in names}


@pytest.mark.parametrize(("train_top_batchnorm", "top_stats_change"), [(False, False),
                                                                      (True, True)])
def test_batchnorm_statistics_in_a_training_step(train_top_batchnorm, top_stats_change):
    model = build_emotion_model(3, image_size=SIZE, train_top_batchnorm=train_top_batchnorm)
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    below, above = "conv5_2_3x3_bn", "conv5_3_3x3_bn"
    before = _moving_means(model, [below, above])
    gamma_before = model.get_layer(above).gamma.numpy().copy()
    model.fit(_faces(4), np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0)
    after = _moving_means(model, [below, above])
    np.testing.assert_array_equal(before[below], after[below])  # frozen: inference mode
    assert (not np.array_equal(before[above], after[above])) == top_stats_change
    assert not np.array_equal(gamma_before, model.get_layer(above).gamma.numpy())  # gamma learns


def test_frozen_part_runs_batchnorm_in_inference_mode(model):
    set_trainable(model, "conv5_3")
    frozen, _ = split_at_cut(model, "conv5_3")
    faces = _faces()
    np.testing.assert_array_equal(frozen(faces, training=True), frozen(faces, training=False))
    assert not frozen.trainable_weights


@pytest.mark.parametrize("trainable_from", ["conv5_3", "conv4_1", "none", "all"])
def test_split_parts_compose_to_the_model(model, trainable_from):
    set_trainable(model, trainable_from)
    frozen, trainable = split_at_cut(model, trainable_from)
    faces = _faces()
    np.testing.assert_allclose(trainable(frozen(faces)), model(faces), rtol=1e-5, atol=1e-5)
    assert _count(trainable.trainable_weights) == _count(model.trainable_weights)


def test_conv5_3_cut_is_the_output_of_block_conv5_2(model):
    frozen, _ = split_at_cut(model, "conv5_3")
    assert frozen.output.shape == (None, 2, 2, 2048)  # 64 px input
    assert frozen.layers[-1].name == "activation_46"


def test_grey_and_equal_rgb_faces_give_the_same_logits(model):
    rgb_model = build_emotion_model(7, image_size=SIZE, input_channels=3)
    rgb_model.set_weights(model.get_weights())
    grey = _faces()
    np.testing.assert_allclose(rgb_model(np.repeat(grey, 3, axis=-1)), model(grey), rtol=1e-5,
                               atol=1e-5)


def test_mixed_precision_keeps_preprocessing_and_logits_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_emotion_model(7, image_size=SIZE)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("preprocess").compute_dtype == "float32"
    assert model.get_layer("conv1_7x7_s2").compute_dtype == "float16"
    assert model(_faces()).dtype == "float32"


def test_weights_from_a_file_reach_the_backbone_and_not_the_head(tmp_path):
    weights = random_weights(seed=3)
    path = tmp_path / "notop.h5"
    write_keras2_file(path, weights)
    model = build_emotion_model(7, image_size=SIZE, weights=str(path))
    kernel = dict(weights["conv5_3_3x3"])["conv5_3_3x3/kernel:0"]
    np.testing.assert_array_equal(model.get_layer("conv5_3_3x3").kernel.numpy(), kernel)
    assert isinstance(model.get_layer("conv5_3_3x3_bn"), SwitchableBatchNormalization)


def test_keras_file_round_trip(model, tmp_path):
    set_trainable(model, "conv5_3")
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    faces = _faces()
    np.testing.assert_allclose(restored(faces), model(faces), rtol=1e-5, atol=1e-5)
    assert not restored.get_layer("conv5_3_3x3_bn").use_batch_statistics


def _residual_branch_gammas(model):
    return {name: model.get_layer(layout.keras_name(name)).gamma.numpy()
            for name in layout.original_layer_names() if name.endswith("_1x1_increase/bn")}


def test_zero_init_residual_starts_a_random_network_as_its_shortcut_path():
    zeroed = build_emotion_model(7, image_size=SIZE, zero_init_residual=True)
    gammas = _residual_branch_gammas(zeroed)
    assert len(gammas) == 16  # one per bottleneck block: 3 + 4 + 6 + 3
    assert all(not g.any() for g in gammas.values())
    # The other BatchNorms (the projection shortcuts' included) keep gamma 1.
    assert np.all(zeroed.get_layer(layout.keras_name("conv2_1_1x1_proj/bn")).gamma.numpy() == 1)
    # Every face then leaves each block as its shortcut: the output of block conv2_2 equals
    # its input (after the ReLU, which its input already passed).
    block_in = keras.Model(zeroed.input, zeroed.get_layer(
        layout.keras_name(layout.block_input_activation("conv2_2"))).output)
    block_out = keras.Model(zeroed.input, zeroed.get_layer(
        layout.keras_name(layout.block_input_activation("conv2_3"))).output)
    faces = _faces(2)
    np.testing.assert_allclose(block_out(faces), block_in(faces), atol=1e-6)


def test_zero_init_residual_leaves_loaded_weights_alone(tmp_path):
    path = tmp_path / "weights.h5"
    write_keras2_file(path, random_weights(seed=3))
    loaded = build_emotion_model(7, image_size=SIZE, weights=str(path), zero_init_residual=True)
    assert all(g.any() for g in _residual_branch_gammas(loaded).values())
