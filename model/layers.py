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
