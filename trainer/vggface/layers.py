"""Keras layers around the VGGFace2 ResNet-50: its input stage and a fine-tuning BatchNorm.

`VGGFace2Preprocess` is the one preprocessing stage of the project's models: stored faces of any
size (grey or RGB, 0..255) -> the network's input (resized to its side with
record_format.resize_faces, grey repeated into B, G and R, VGGFace2 channel means subtracted).
It is the model's first layer, so training, evaluation, the feature cache and every export run
the same operations, on the device.
"""

from __future__ import annotations

import keras
import numpy as np

from beam_preprocess.record_format import resize_faces

# keras-vggface utils.preprocess_input(version=2): means of the VGGFace2 training set, B, G, R.
BGR_MEANS = (91.4953, 103.8827, 131.0912)


def preprocess_input(x):
    """RGB pixels 0..255 (channels last) -> BGR minus the VGGFace2 means, float32.

    Works on NumPy arrays (returns NumPy) and on tensors (returns a tensor).
    """
    if isinstance(x, np.ndarray):
        return x[..., ::-1].astype(np.float32) - np.asarray(BGR_MEANS, np.float32)
    x = keras.ops.cast(x, "float32")
    return keras.ops.flip(x, axis=-1) - keras.ops.convert_to_tensor(BGR_MEANS, "float32")


@keras.saving.register_keras_serializable(package="vggface")
class VGGFace2Preprocess(keras.layers.Layer):
    """`preprocess_input` as a layer for grey or RGB faces, resizing them to `image_size` first.

    With `image_size` set, faces of another side are resized by record_format.resize_faces (the
    Beam job's resize, rounded to grey levels), so a network fed 48 px records sees what one fed
    224 px records sees. A grey face becomes the same value in B, G and R. The layer always
    computes in float32: under mixed precision, float16 would round pixel values.
    """

    def __init__(self, image_size: int | None = None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.image_size = image_size

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        if self.image_size is not None and x.shape[1] != self.image_size:
            x = keras.ops.cast(resize_faces(x, self.image_size), "float32")
        if x.shape[-1] == 1:
            x = keras.ops.concatenate([x, x, x], axis=-1)
        elif x.shape[-1] == 3:
            x = keras.ops.flip(x, axis=-1)
        else:
            raise ValueError(f"Expected 1 (grey) or 3 (RGB) channels, got shape {x.shape}")
        return x - keras.ops.convert_to_tensor(BGR_MEANS, "float32")

    def compute_output_shape(self, input_shape):
        side = input_shape[1:3] if self.image_size is None else (self.image_size,) * 2
        return (input_shape[0], *side, 3)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size}


@keras.saving.register_keras_serializable(package="vggface_emotion")
class SwitchableBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization whose use of batch statistics is a setting, not only `trainable`.

    With `use_batch_statistics=False` the layer normalises with its moving statistics even in
    training, while gamma and beta can still learn: the Keras transfer-learning advice (BN in
    inference mode when fine-tuning) without freezing the affine part. A frozen layer
    (`trainable=False`) always runs in inference mode, as in Keras. When it does use batch
    statistics on several replicas, set `synchronized` (Keras' switch): the statistics are then
    those of the global batch and every replica's moving averages stay the same.
    """

    def __init__(self, use_batch_statistics=True, **kwargs):
        super().__init__(**kwargs)
        self.use_batch_statistics = use_batch_statistics

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=bool(training) and self.use_batch_statistics,
                            mask=mask)

    def get_config(self):
        return {**super().get_config(), "use_batch_statistics": self.use_batch_statistics}
