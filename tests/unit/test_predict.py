from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.inference.predictor import Predictor, to_model_input
from model.training.network import NetworkConfig, build_model

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (300, 200), (200, 10, 10)),
        Image.new("RGBA", (20, 20)),
        Image.new("L", (48, 48), 7),
        Image.new("I;16", (96, 96)),
        np.zeros((100, 80), dtype=np.uint8),
        np.zeros((60, 60, 3), dtype=np.uint8),
        np.zeros((60, 60, 4), dtype=np.uint8),
        np.zeros((48, 48, 1), dtype=np.uint8),
        np.full((10, 10), 300.0),
    ],
)
def test_any_image_becomes_48x48_gray(image: Image.Image | np.ndarray) -> None:
    pixels = to_model_input(image)
    assert pixels.shape == (48, 48, 1) and pixels.dtype == np.uint8


def test_gray_value_survives_conversion() -> None:
    assert int(to_model_input(Image.new("L", (10, 10), 123)).mean()) == 123


def test_array_that_is_not_an_image_is_rejected() -> None:
    with pytest.raises(ValueError, match="not an image"):
        to_model_input(np.zeros((4, 4, 5)))


def test_predictor_returns_one_probability_per_class() -> None:
    model = build_model(NetworkConfig(filters=(4,), dense_units=8), (48, 48, 1), 7)
    predictor = Predictor(model, version="v1")
    result = predictor.predict(Image.new("RGB", (640, 480)))
    assert list(result) == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert sum(result.values()) == pytest.approx(1.0, abs=1e-5)
    batch = predictor.predict_batch(np.zeros((3, 48, 48, 1), dtype=np.uint8))
    assert batch.shape == (3, 7)


def test_a_model_file_carrying_code_is_refused(tmp_path: Path) -> None:
    import keras

    from model.inference.predictor import load_keras_model

    inputs = keras.Input((48, 48, 1))
    # A Lambda layer stores Python bytecode in the file; loading it would run that code.
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        load_keras_model(tmp_path / "lambda.keras")
