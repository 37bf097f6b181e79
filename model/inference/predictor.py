"""Inference: load a saved model safely, preprocess any image, return class probabilities."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from model.contract import CLASSES, IMAGE_SIZE

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


def load_keras_model(path: Path) -> keras.Model:
    """Load a ``.keras`` file with safe mode on (no arbitrary code from the file runs).

    The platform's own layers (:mod:`model.inference.layers`) are registered first, so models that
    use them load; any other custom class in a file is refused.

    Args:
        path: the model file.

    Returns:
        The model, ready for inference.
    """
    import keras

    import model.inference.layers  # noqa: F401  (registers the custom layers with Keras)

    return keras.saving.load_model(path, compile=False, safe_mode=True)


#: The weights file inside a ``.keras`` archive.
WEIGHTS_ENTRY = "model.weights.h5"


def save_compact(model: keras.Model, path: Path) -> Path:
    """Save a ``.keras`` file with its float32 weights stored as float16 (half the bytes).

    For models that travel or ship with the repository (a device run's model comes back
    through a 16 MB limit; ``pretrained/`` keeps models at 12 MB or less). Loading casts the
    weights back to the model's float32 variables, so :func:`load_keras_model` reads the file
    as any other; rounding moves probabilities by about 1e-3.

    Args:
        model: the model to save.
        path: the ``.keras`` file to write.

    Returns:
        ``path``.
    """
    import tempfile
    import zipfile

    import h5py

    model.save(path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
    with tempfile.TemporaryDirectory() as scratch:
        full, half = Path(scratch) / "full.h5", Path(scratch) / "half.h5"
        for info, data in entries:
            if info.filename == WEIGHTS_ENTRY:
                full.write_bytes(data)
        with h5py.File(full, "r") as source, h5py.File(half, "w") as target:
            _copy_as_float16(source, target)
        entries = [
            (info, half.read_bytes() if info.filename == WEIGHTS_ENTRY else data)
            for info, data in entries
        ]
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for info, data in entries:
            archive.writestr(info, data)
    partial.replace(path)
    return path


def _copy_as_float16(source: Any, target: Any) -> None:
    """Copy an HDF5 group recursively, float32 datasets as float16, attributes as they are."""
    import h5py

    target.attrs.update(source.attrs)
    for name, item in source.items():
        if isinstance(item, h5py.Group):
            _copy_as_float16(item, target.create_group(name))
            continue
        data = item[()]
        if getattr(data, "dtype", None) == np.float32:
            data = data.astype(np.float16)
        target.create_dataset(name, data=data)
        target[name].attrs.update(item.attrs)


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

    Runs the TFLite export through LiteRT when there is one, else calls the Keras model
    directly (never ``model.predict``, whose per-call overhead dwarfs one face's work:
    bench/infer.py, docs/model.md).

    Args:
        model: a Keras model or a :class:`~model.inference.tflite.TFLiteRunner`, mapping
            N x 48 x 48 x 1 pixels to N x len(classes) probabilities.
        version: the registry version the model came from (shown to users).
        classes: class names in label-index order.
    """

    def __init__(
        self, model: Any, version: str = "local", classes: Sequence[str] = CLASSES
    ) -> None:
        from model.inference.tflite import TFLiteRunner

        self.model = model
        self.version = version
        self.classes = tuple(classes)
        self.runtime = "tflite" if isinstance(model, TFLiteRunner) else "keras"

    @classmethod
    def from_file(cls, path: Path, version: str = "local", prefer_tflite: bool = True) -> Predictor:
        """Load a predictor from a ``.keras`` file, or from the ``serving.tflite`` beside it.

        Args:
            path: the model file.
            version: label for the loaded version.
            prefer_tflite: use the TFLite export in the same folder when it exists.

        Returns:
            The predictor.
        """
        from model.contract import TFLITE_FILE
        from model.inference.tflite import TFLiteRunner

        exported = path.with_name(TFLITE_FILE)
        if prefer_tflite and exported.is_file():
            # One thread per core: faster per face than one thread (bench/infer.py).
            return cls(TFLiteRunner(exported, threads=os.cpu_count()), version=version)
        return cls(load_keras_model(path), version=version)

    def predict_batch(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of preprocessed images.

        Args:
            pixels: uint8 array N x 48 x 48 x 1.

        Returns:
            float array N x len(classes); each row sums to 1.
        """
        batch = pixels.astype(np.float32)
        output = (
            self.model(batch) if self.runtime == "tflite" else self.model(batch, training=False)
        )
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
