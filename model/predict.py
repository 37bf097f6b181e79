"""Inference: load a saved model safely, preprocess any image, return class probabilities."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from model.dataset import CLASSES, IMAGE_SIZE

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


def load_keras_model(path: Path) -> keras.Model:
    """Load a ``.keras`` file with safe mode on (no arbitrary code from the file runs).

    Args:
        path: the model file.

    Returns:
        The model, ready for inference.
    """
    import keras

    return keras.saving.load_model(path, compile=False, safe_mode=True)


def to_model_input(image: Image.Image | np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Convert an image of any size and mode to one ``size`` x ``size`` x 1 uint8 array.

    Args:
        image: a PIL image or an array (H x W, H x W x 1, H x W x 3 or H x W x 4).
        size: output side length.

    Returns:
        The grayscale, resized pixels.

    Raises:
        ValueError: if the array has a shape no image has.
    """
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise ValueError(
                f"image array of shape {array.shape} is not an image; "
                "expected H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA)"
            )
        if array.dtype != np.uint8:
            array = np.clip(array, 0, 255).astype(np.uint8)
        image = Image.fromarray(array)
    gray = image.convert("L")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)[..., np.newaxis]


class Predictor:
    """A loaded model that turns images into per-class probabilities.

    Calls the model directly rather than ``model.predict``, which costs ~50 ms of overhead per
    call whatever the batch.

    Args:
        model: a Keras model mapping N x 48 x 48 x 1 pixels to N x len(classes) probabilities.
        version: the registry version the model came from (shown to users).
        classes: class names in label-index order.
    """

    def __init__(
        self, model: keras.Model, version: str = "local", classes: Sequence[str] = CLASSES
    ) -> None:
        self.model = model
        self.version = version
        self.classes = tuple(classes)

    @classmethod
    def from_file(cls, path: Path, version: str = "local") -> Predictor:
        """Load a predictor from a ``.keras`` file.

        Args:
            path: the model file.
            version: label for the loaded version.

        Returns:
            The predictor.
        """
        return cls(load_keras_model(path), version=version)

    def predict_batch(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of preprocessed images.

        Args:
            pixels: uint8 array N x 48 x 48 x 1.

        Returns:
            float array N x len(classes); each row sums to 1.
        """
        output = self.model(pixels.astype(np.float32), training=False)
        return np.asarray(output, dtype=np.float64)

    def predict(self, image: Image.Image | np.ndarray) -> dict[str, float]:
        """Probabilities for one image of any size and mode.

        Args:
            image: a PIL image or pixel array.

        Returns:
            ``{class name: probability}`` in label-index order.
        """
        probabilities = self.predict_batch(to_model_input(image)[np.newaxis])[0]
        return {name: float(p) for name, p in zip(self.classes, probabilities, strict=True)}
