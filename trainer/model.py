"""The emotion classifier: VGGFace2 ResNet-50 backbone plus a small head, and where it trains.

`build_emotion_model` takes raw faces (0..255, grey or RGB) and returns float32 logits;
`set_trainable` chooses the fine-tuning cut by block name; `split_at_cut` cuts the model there
into a frozen part (computed once, e.g. to cache features) and the part that trains.
"""

from __future__ import annotations

import keras

from trainer.vggface import layout
from trainer.vggface.download import fetch_vggface_weights
from trainer.vggface.layers import SwitchableBatchNormalization, VGGFace2Preprocess
from trainer.vggface.layout import TRAIN_ALL, TRAIN_HEAD_ONLY, TRAINABLE_FROM_CHOICES
from trainer.vggface.network import (
    build_backbone,
    load_vggface_weights,
    zero_residual_branches,
)

INPUT_NAME = "image"
PREPROCESS_NAME = "preprocess"
HEAD_LAYER_NAMES = ("global_avg_pool", "head_dense", "head_dropout", "logits")
BACKBONE_OUTPUT = "activation_49"


def _switchable_batch_norm(original_name):
    return SwitchableBatchNormalization(name=layout.keras_name(original_name))


def build_emotion_model(num_classes, *, image_size=224, input_channels=1, weights=None,
                        trainable_from="conv5_3", dense_units=256, dropout=0.5,
                        train_top_batchnorm=False, input_size=None,
                        zero_init_residual=False) -> keras.Model:
    """Faces [N, I, I, C] with values 0..255 (float or uint8) -> float32 logits [N, num_classes].

    Args:
      num_classes: number of emotion classes.
      image_size: the network's side; any size from 32 up works because the head pools
        globally (at 224 this equals the original 7x7 `avg_pool`).
      input_size: I, the side of the faces the model takes (the records' side); default
        image_size. The preprocessing stage resizes I to image_size.
      input_channels: 1 for grayscale faces, 3 for RGB.
      weights: None (random backbone), "vggface2" (published notop file, downloaded and cached),
        or a path (local or gs://) to a keras-vggface weight file.
      trainable_from, train_top_batchnorm: see `set_trainable`.
      dense_units, dropout: the head, Dense(dense_units, relu) -> Dropout -> Dense(logits).
      zero_init_residual: with a random backbone (weights None), every residual branch starts
        at zero (vggface.network.zero_residual_branches): from scratch it learns the synthetic
        expressions in about a third of the steps.
    """
    if input_channels not in (1, 3):
        raise ValueError(f"input_channels must be 1 (grey) or 3 (RGB), got {input_channels}")
    input_size = input_size or image_size
    inputs = keras.Input(shape=(input_size, input_size, input_channels), name=INPUT_NAME)
    x = VGGFace2Preprocess(image_size, name=PREPROCESS_NAME)(inputs)
    x = build_backbone(x, batch_norm=_switchable_batch_norm)
    pool_name, dense_name, dropout_name, logits_name = HEAD_LAYER_NAMES
    x = keras.layers.GlobalAveragePooling2D(name=pool_name)(x)
    x = keras.layers.Dense(dense_units, activation="relu", name=dense_name)(x)
    x = keras.layers.Dropout(dropout, name=dropout_name)(x)
    # float32 whatever the global policy: softmax/cross-entropy on float16 logits is unstable.
    logits = keras.layers.Dense(num_classes, dtype="float32", name=logits_name)(x)
    model = keras.Model(inputs, logits, name="vggface_emotion")
    if weights == "vggface2":
        weights = fetch_vggface_weights(include_top=False)
    if weights is not None:
        load_vggface_weights(model, weights)
    elif zero_init_residual:
        zero_residual_branches(model)
    set_trainable(model, trainable_from, train_top_batchnorm=train_top_batchnorm)
    return model


def _check_trainable_from(trainable_from):
    if trainable_from not in TRAINABLE_FROM_CHOICES:
        raise ValueError(f"Unknown trainable_from {trainable_from!r}; valid: "
                         f"{', '.join(TRAINABLE_FROM_CHOICES)}")


def _trainable_backbone_layers(trainable_from) -> set[str]:
    """Keras names of the backbone layers at or above the cut."""
    originals = layout.original_layer_names()
    if trainable_from == TRAIN_HEAD_ONLY:
        return set()
    start = 0 if trainable_from == TRAIN_ALL else originals.index(f"{trainable_from}_1x1_reduce")
    return {layout.keras_name(name) for name in originals[start:]}


def set_trainable(model, trainable_from="conv5_3", train_top_batchnorm=False,
                  synchronized_batchnorm=False) -> None:
    """Freezes the backbone below the cut; everything from the cut up, and the head, trains.

    trainable_from: a block name such as "conv5_3" (default: the blog's "activation_46" cut,
    i.e. the whole conv5_3 block trains), "conv4_1", "conv5_1"...; "none" (head only) or "all".
    BatchNorm layers below the cut are frozen and run in inference mode; above the cut their
    gamma/beta train but they still normalise with their moving statistics, unless
    train_top_batchnorm is True (then they use batch statistics in training, as in Keras 2).
    synchronized_batchnorm: batch statistics are those of the global batch (all replicas), so
    that every replica's moving averages stay equal; set it whenever there is more than one.
    """
    _check_trainable_from(trainable_from)
    above_cut = _trainable_backbone_layers(trainable_from)
    backbone = set(layout.original_names_by_keras_name())
    model.trainable = True
    for layer in model.layers:
        if layer.name in backbone:
            layer.trainable = layer.name in above_cut
        else:
            layer.trainable = True
        if isinstance(layer, SwitchableBatchNormalization):
            layer.use_batch_statistics = layer.trainable and train_top_batchnorm
            layer.synchronized = layer.use_batch_statistics and synchronized_batchnorm


def cut_layer_name(trainable_from) -> str:
    """Name of the layer whose output is the input of the trainable part."""
    _check_trainable_from(trainable_from)
    if trainable_from == TRAIN_ALL:
        return PREPROCESS_NAME
    if trainable_from == TRAIN_HEAD_ONLY:
        return BACKBONE_OUTPUT
    return layout.keras_name(layout.block_input_activation(trainable_from))


def split_at_cut(model, trainable_from="conv5_3") -> tuple[keras.Model, keras.Model]:
    """(frozen_part, trainable_part), sharing the layers (and weights) of `model`.

    trainable_part(frozen_part(x)) == model(x). The frozen part ends at the cut, e.g. the output
    of block conv5_2 (activation_46) for "conv5_3", or the 2048-channel backbone output for
    "none"; it holds no trainable layer when `set_trainable` was called with the same setting.
    """
    cut = model.get_layer(cut_layer_name(trainable_from)).output
    frozen_part = keras.Model(model.input, cut, name="frozen_part")
    trainable_part = keras.Model(cut, model.output, name="trainable_part")
    return frozen_part, trainable_part


def backbone_variables(model) -> list:
    """The trainable variables of the VGGFace2 layers (not the head's)."""
    backbone = set(layout.original_names_by_keras_name())
    return [variable for layer in model.layers if layer.name in backbone
            for variable in layer.trainable_variables]
