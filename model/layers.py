"""Custom Keras layers of the network, registered so saved models load with safe mode on.

Imported lazily (by :mod:`model.network` and :mod:`model.predict`): importing it imports Keras.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fer")
class TrainingCrop(keras.layers.Layer):
    """Random ``size`` x ``size`` windows in training; the whole image or its centre after.

    At inference the layer passes the whole image (``inference="full"``) or its central
    window (``"center"``). Training on crops costs (size/48)^2 of the convolution FLOPs and
    shifts every face by up to ``48 - size`` pixels. Both inference modes keep the pixel
    scale (Keras's ``RandomCrop`` resizes at inference, which shrinks the face, and draws
    one offset per batch): ``full`` lets a fully convolutional network see the border too;
    ``center`` shows it exactly the statistics it was trained on.
    """

    def __init__(
        self, size: int, seed: int | None = None, inference: str = "full", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if inference not in ("full", "center"):
            raise ValueError(f"inference must be 'full' or 'center', not {inference!r}")
        self.size = size
        self.seed = seed
        self.inference = inference
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:  # noqa: D102
        height, width = inputs.shape[1], inputs.shape[2]
        if not training:
            if self.inference == "full":
                return inputs
            top, left = (height - self.size) // 2, (width - self.size) // 2
            return inputs[:, top : top + self.size, left : left + self.size, :]
        batch = ops.shape(inputs)[0]
        span = ops.arange(self.size, dtype="int32")
        offsets = keras.random.randint(
            (batch, 2), 0, min(height, width) - self.size + 1, seed=self.seed_generator
        )
        # One-hot row and column selectors: a per-image crop with plain matrix products, so
        # it runs unchanged on every backend.
        rows = ops.one_hot(offsets[:, 0:1] + span, height, dtype=inputs.dtype)
        cols = ops.one_hot(offsets[:, 1:2] + span, width, dtype=inputs.dtype)
        picked = ops.einsum("bih,bhwc->biwc", rows, inputs)
        return ops.einsum("biwc,bjw->bijc", picked, cols)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:  # noqa: D102
        if self.inference == "full":
            return input_shape
        return (input_shape[0], self.size, self.size, *input_shape[3:])

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        config = {"size": self.size, "seed": self.seed, "inference": self.inference}
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="fer")
class HorizontalFlip(keras.layers.Layer):
    """The mirror image, always (for test-time augmentation inside the served model)."""

    def call(self, inputs: Any) -> Any:  # noqa: D102
        return ops.flip(inputs, axis=2)


@keras.saving.register_keras_serializable(package="fer")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization through TensorFlow's fused kernel; the Keras layer elsewhere.

    Keras 3 normalises with separate ops (cast to float32, moments, normalise, cast back),
    which took about 38 % of a training step of the ``cpu`` network on 2 cores; TensorFlow's
    ``FusedBatchNormV3`` does each direction in one kernel and takes bfloat16 activations
    with float32 statistics. Same variables, same update rule, so a model can swap between
    the two layers with ``set_weights``. Falls back to the Keras layer for other backends,
    a mask, renormalisation, or a channel axis other than the last of a 4-D input.
    """

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:  # noqa: D102
        if (
            keras.backend.backend() != "tensorflow"
            or mask is not None
            or self.renorm
            or len(inputs.shape) != 4
            or self.axis not in (-1, 3)
        ):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones(channels)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros(channels)
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, is_training=True
            )[:3]
            # The kernel returns the unbiased variance; Keras keeps the biased one.
            count = tf.cast(tf.size(inputs) // channels, tf.float32)
            variance = variance * (count - 1.0) / count
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum)
            )
            return outputs
        return tf.compat.v1.nn.fused_batch_norm(
            inputs,
            gamma,
            beta,
            mean=tf.cast(self.moving_mean, tf.float32),
            variance=tf.cast(self.moving_variance, tf.float32),
            epsilon=self.epsilon,
            is_training=False,
        )[0]
