from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.dataset import CLASSES
from model.network import NetworkConfig, build_model
from model.predict import Predictor
from model.train import TrainConfig, fit_model, split_train_validation

pytestmark = pytest.mark.unit

SMALL = NetworkConfig(filters=(8,), dense_units=16)


def _separable(n_per_class: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(len(CLASSES)), n_per_class)
    x = np.stack([np.full((48, 48), 20 + 30 * k) for k in y]).astype(np.float64)
    x = np.clip(x + rng.normal(0, 8, x.shape), 0, 255).astype(np.uint8)[..., None]
    return x, y


def test_model_maps_raw_pixels_to_probabilities() -> None:
    model = build_model(SMALL, (48, 48, 1), len(CLASSES))
    out = np.asarray(model(np.zeros((2, 48, 48, 1), dtype=np.float32)))
    assert out.shape == (2, 7)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert model.layers[1].name.startswith("rescaling")


def test_validation_split_is_stratified_and_seeded() -> None:
    x, y = _separable(20)
    _, _, y_train, y_val = split_train_validation(x, y, 0.25, seed=3)
    assert np.bincount(y_val).tolist() == [5] * 7
    assert len(y_train) == 105
    _, _, _, y_val_again = split_train_validation(x, y, 0.25, seed=3)
    assert np.array_equal(y_val, y_val_again)


def test_training_lowers_the_loss_and_saves_a_loadable_model(tmp_path: Path) -> None:
    x, y = _separable(20)
    config = TrainConfig(epochs=4, batch_size=16, learning_rate=3e-3, network=SMALL)
    result = fit_model(x, y, config, tmp_path)
    history = json.loads(result.history_path.read_text())
    assert history["loss"][-1] < history["loss"][0]
    assert result.epochs_run == 4
    predictor = Predictor.from_file(result.model_path)
    probabilities = predictor.predict(x[0, ..., 0])
    assert list(probabilities) == list(CLASSES)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_train_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainConfig(validation_fraction=0.9)
