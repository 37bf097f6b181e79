"""Custom Keras layers of the network, registered so saved models load with safe mode on.

Imported lazily (by :mod:`model.training.network` and :mod:`model.inference.predictor`):
importing it imports Keras.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
class RandomAffine(keras.layers.Layer):
    """Random rotation, zoom and shift of each image in one bilinear warp; identity after.

    Keras's ``RandomRotation``, ``RandomZoom`` and ``RandomTranslation`` set
    ``supports_jit = False``, which silently turns XLA off for the whole model under JAX
    (keras-team/keras#23229): a GPU step then runs op by op. This layer draws one affine map
    per image and applies it with ``keras.ops.image.affine_transform``, which every backend
    compiles, and resamples once instead of once per transform.

    Args:
        rotate_degrees: largest rotation either way, in degrees.
        zoom: largest relative zoom in or out (0.1: scale 0.9-1.1).
        translate: largest shift either way, as a fraction of the side.
        seed: seed of the random draws.
        fill_mode: how pixels from outside the image are filled (``reflect`` as Keras's
            layers do, ``nearest``, ``constant``, ...).
    """

    def __init__(
        self,
        rotate_degrees: float = 0.0,
        zoom: float = 0.0,
        translate: float = 0.0,
        seed: int | None = None,
        fill_mode: str = "reflect",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rotate_degrees = rotate_degrees
        self.zoom = zoom
        self.translate = translate
        self.seed = seed
        self.fill_mode = fill_mode
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, batch: Any, limit: float) -> Any:
        return keras.random.uniform(
            (batch,), -limit, limit, dtype="float32", seed=self.seed_generator
        )

    def transforms(self, batch: Any, height: int, width: int) -> Any:
        """One random output-to-input map per image, as ``affine_transform`` takes them.

        Args:
            batch: number of images.
            height: image height.
            width: image width.

        Returns:
            float32 tensor ``batch x 8``: ``[a0, a1, a2, b0, b1, b2, 0, 0]`` with
            ``x_in = a0 x + a1 y + a2`` and ``y_in = b0 x + b1 y + b2``.
        """
        angle = self._uniform(batch, self.rotate_degrees * math.pi / 180.0)
        scale = 1.0 + self._uniform(batch, self.zoom)
        shift_x = self._uniform(batch, self.translate * width)
        shift_y = self._uniform(batch, self.translate * height)
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        # Rotate and scale about the image centre, then shift.
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        a2 = cx - cos * cx + sin * cy + shift_x
        b2 = cy - sin * cx - cos * cy + shift_y
        zeros = ops.zeros_like(angle)
        return ops.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)

    def call(self, inputs: Any, training: bool | None = None) -> Any:  # noqa: D102
        if not training or not (self.rotate_degrees or self.zoom or self.translate):
            return inputs
        height, width = inputs.shape[1], inputs.shape[2]
        images = ops.cast(inputs, "float32")  # the warp kernels are float32 on every backend
        warped = ops.image.affine_transform(
            images,
            self.transforms(ops.shape(inputs)[0], height, width),
            interpolation="bilinear",
            fill_mode=self.fill_mode,
            data_format="channels_last",
        )
        return ops.cast(warped, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:  # noqa: D102
        return input_shape

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        config = {
            "rotate_degrees": self.rotate_degrees,
            "zoom": self.zoom,
            "translate": self.translate,
            "seed": self.seed,
            "fill_mode": self.fill_mode,
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="fer")
class InferenceViews(keras.layers.Layer):
    """Stack the views test-time averaging scores: shifted copies and their mirror images.

    The output holds ``len(shifts) x (2 if flip else 1)`` views of the batch one after the
    other along the batch axis, so the network scores them all in one pass;
    :class:`MeanOverViews` averages its outputs back. A shift ``(dy, dx)`` moves the image by
    that many pixels (rows shifted in are zero): with a centre-crop network and shifts of up
    to ``(48 - crop) / 2`` the zeros never reach the crop, and the views are the corner crops
    of the ten-crop evaluation.

    Args:
        shifts: ``(dy, dx)`` pixel shifts, ``(0, 0)`` for the image as it is.
        flip: add the mirror image of every shifted view.
    """

    def __init__(
        self, shifts: Sequence[Sequence[int]] = ((0, 0),), flip: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.shifts = [tuple(int(v) for v in shift) for shift in shifts]
        self.flip = flip

    @property
    def count(self) -> int:
        """How many views each image becomes."""
        return len(self.shifts) * (2 if self.flip else 1)

    @staticmethod
    def _shift(inputs: Any, dy: int, dx: int) -> Any:
        height, width = inputs.shape[1], inputs.shape[2]
        window = inputs[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0), :]
        pad = [[0, 0], [max(-dy, 0), max(dy, 0)], [max(-dx, 0), max(dx, 0)], [0, 0]]
        return ops.pad(window, pad)

    def call(self, inputs: Any) -> Any:  # noqa: D102
        views = []
        for dy, dx in self.shifts:
            view = inputs if (dy, dx) == (0, 0) else self._shift(inputs, dy, dx)
            views.append(view)
            if self.flip:
                views.append(ops.flip(view, axis=2))
        return ops.concatenate(views, axis=0) if len(views) > 1 else views[0]

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:  # noqa: D102
        batch = None if input_shape[0] is None else input_shape[0] * self.count
        return (batch, *input_shape[1:])

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "shifts": self.shifts, "flip": self.flip}


@keras.saving.register_keras_serializable(package="fer")
class MeanOverViews(keras.layers.Layer):
    """Average the outputs of :class:`InferenceViews`'s stacked views back to one per image.

    Args:
        count: views per image.
    """

    def __init__(self, count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = count

    def call(self, inputs: Any) -> Any:  # noqa: D102
        per_view = ops.reshape(inputs, (self.count, -1, inputs.shape[-1]))
        return ops.mean(per_view, axis=0)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:  # noqa: D102
        batch = None if input_shape[0] is None else input_shape[0] // self.count
        return (batch, input_shape[-1])

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "count": self.count}


@keras.saving.register_keras_serializable(package="fer")
class HorizontalFlip(keras.layers.Layer):
    """The mirror image, always (test-time flips of models saved before :class:`InferenceViews`)."""

    def call(self, inputs: Any) -> Any:  # noqa: D102
        return ops.flip(inputs, axis=2)


@keras.saving.register_keras_serializable(package="fer")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization through TensorFlow's fused kernel; the Keras layer elsewhere.

    Keras 3 normalises with separate ops (cast to float32, moments, normalise, cast back),
    which took a large share of a training step of the ``cpu`` network (docs/model.md); TensorFlow's
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
