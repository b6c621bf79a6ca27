"""The VGGFace2 ResNet-50 of keras-vggface (v2.0 weights), rebuilt for Keras 3.

The architecture, layer order and weight shapes are those of the original `RESNET50` model; layer
names follow the rule in `trainer.vggface.layout` ("/" -> "_"). Like the original, the model takes
already-preprocessed input (`preprocess_input`: BGR minus the VGGFace2 channel means; the
layer doing it for grey or RGB faces of any size is in trainer.vggface.layers).
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from trainer.vggface import layout
from trainer.vggface.download import WEIGHTS_URLS, fetch_vggface_weights
from trainer.vggface.layers import BGR_MEANS, VGGFace2Preprocess, preprocess_input
from trainer.vggface.weight_files import load_vggface_weights, save_vggface_h5

__all__ = [
    "BGR_MEANS",
    "WEIGHTS_URLS",
    "VGGFace2Preprocess",
    "build_backbone",
    "fetch_vggface_weights",
    "load_vggface_weights",
    "preprocess_input",
    "resnet50",
    "save_vggface_h5",
]

def _conv(original, filters, kernel_size, strides=1, padding="valid"):
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                               use_bias=False, name=layout.keras_name(original))


def _relu(original):
    return keras.layers.Activation("relu", name=original)


def _bottleneck(x, block, batch_norm, activation_names, add_name):
    """One Caffe-style bottleneck block; the stride sits on the first 1x1 conv."""
    f1, f2, f3 = block.filters
    prefix = block.name
    block_input = x
    x = _conv(f"{prefix}_1x1_reduce", f1, 1, block.strides)(x)
    x = batch_norm(f"{prefix}_1x1_reduce/bn")(x)
    x = _relu(next(activation_names))(x)
    x = _conv(f"{prefix}_3x3", f2, 3, padding="same")(x)
    x = batch_norm(f"{prefix}_3x3/bn")(x)
    x = _relu(next(activation_names))(x)
    x = _conv(f"{prefix}_1x1_increase", f3, 1)(x)
    x = batch_norm(f"{prefix}_1x1_increase/bn")(x)
    shortcut = block_input
    if block.has_projection:
        shortcut = _conv(f"{prefix}_1x1_proj", f3, 1, block.strides)(block_input)
        shortcut = batch_norm(f"{prefix}_1x1_proj/bn")(shortcut)
    x = keras.layers.Add(name=add_name)([x, shortcut])
    return _relu(next(activation_names))(x)


def _keras_batch_norm(original):
    return keras.layers.BatchNormalization(name=layout.keras_name(original))


def zero_residual_branches(model: keras.Model) -> None:
    """Starts every bottleneck's residual branch at zero: the gamma of its last BatchNorm
    (`<block>_1x1_increase/bn`) set to 0, so the randomly initialised network begins as its
    shortcut path (Goyal et al. 2017, "Accurate, Large Minibatch SGD", 5.1; torchvision's
    `zero_init_residual`). For training from random weights only: loaded weights overwrite it.
    """
    for original in layout.original_layer_names():
        if original.endswith("_1x1_increase/bn"):
            gamma = model.get_layer(layout.keras_name(original)).gamma
            gamma.assign(keras.ops.zeros_like(gamma))


def build_backbone(x, batch_norm: Callable[[str], keras.layers.Layer] | None = None):
    """Applies the convolutional part of the network (conv1 .. conv5_3) to the tensor `x`.

    `batch_norm(original_name)` makes each BatchNormalization layer (keras' own by default; the
    fine-tuning model passes its own subclass). Returns the 2048-channel feature map, before
    `avg_pool`.
    """
    batch_norm = batch_norm or _keras_batch_norm
    activation_names = iter(f"activation_{i}" for i in range(1, 50))
    x = _conv("conv1/7x7_s2", 64, 7, strides=2, padding="same")(x)
    x = batch_norm("conv1/7x7_s2/bn")(x)
    x = _relu(next(activation_names))(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="max_pooling2d_1")(x)
    for add_index, block in enumerate(layout.blocks(), start=1):
        x = _bottleneck(x, block, batch_norm, activation_names, f"add_{add_index}")
    return x


def resnet50(include_top=False, weights="vggface2", input_shape=(224, 224, 3), pooling=None,
             classes=layout.NUM_IDENTITIES, weights_sha256=None):
    """The VGGFace2 ResNet-50 as a `keras.Model`, optionally with the published weights.

    Args:
      include_top: add Flatten and the `classes`-way softmax `classifier` (needs a 224 input).
      weights: "vggface2" (download or reuse the cached published file for this top), a path
        (local or gs://) to a weight file in the keras-vggface layout, or None (random init).
      input_shape: channels-last shape of the preprocessed input; at least 197x197 because of the
        fixed 7x7 `avg_pool`.
      pooling: without the top, None keeps the (N, 1, 1, 2048) `avg_pool` output; "avg" or "max"
        adds global pooling to (N, 2048).
      classes: size of the classifier; only 8631 works with the published weights.
      weights_sha256: optional hex digest the weight file must have.
    """
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if include_top and weights == "vggface2" and classes != layout.NUM_IDENTITIES:
        raise ValueError(f"The published top has {layout.NUM_IDENTITIES} classes, got {classes}")
    inputs = keras.Input(shape=input_shape, name="input_1")
    x = build_backbone(inputs)
    x = keras.layers.AveragePooling2D(7, name="avg_pool")(x)
    if include_top:
        x = keras.layers.Flatten(name="flatten_1")(x)
        x = keras.layers.Dense(classes, activation="softmax", name=layout.CLASSIFIER)(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="global_average_pooling2d_1")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="global_max_pooling2d_1")(x)
    model = keras.Model(inputs, x, name="vggface_resnet50")
    if weights == "vggface2":
        weights = fetch_vggface_weights(include_top=include_top, sha256=weights_sha256)
    if weights is not None:
        load_vggface_weights(model, weights)
    return model
