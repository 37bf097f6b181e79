"""Jit-safe augmentation, test-time views, the gpu profile and compact model files (TF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.contract import CLASSES
from model.training.config import TrainConfig
from model.training.network import (
    AugmentConfig,
    NetworkConfig,
    build_model,
    logits_model,
    with_temperature,
)

pytestmark = pytest.mark.unit

SMALL = NetworkConfig(
    filters=(8, 16),
    batch_norm=True,
    head="gap",
    dense_units=16,
    augment=AugmentConfig(crop=40, crop_inference="center"),
)


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48, 1)).astype(np.float32)


def test_random_affine_varies_images_in_training_only() -> None:
    from model.inference.layers import RandomAffine

    x = _pixels(6)
    layer = RandomAffine(rotate_degrees=15, zoom=0.15, translate=0.1, seed=3)
    first = np.asarray(layer(x, training=True))
    second = np.asarray(layer(x, training=True))
    assert first.shape == x.shape
    # Not an identity: every image moves, and each call draws new maps.
    assert (np.abs(first - x).mean(axis=(1, 2, 3)) > 5).all()
    assert np.abs(first - second).mean() > 5
    assert np.array_equal(np.asarray(layer(x, training=False)), x)
    # With no range the warp is the identity even in training.
    assert np.array_equal(np.asarray(RandomAffine(seed=1)(x, training=True)), x)


def test_random_affine_maps_are_rotations_zooms_and_shifts_about_the_centre() -> None:
    from model.inference.layers import RandomAffine

    maps = np.asarray(RandomAffine(rotate_degrees=20, zoom=0.2, seed=5).transforms(64, 48, 48))
    a0, a1, a2, b0, b1, b2 = maps[:, :6].T
    assert np.allclose(a0, b1) and np.allclose(a1, -b0)  # a rotation times a scale
    scale = 1 / np.hypot(a0, b0)
    angle = np.degrees(np.arctan2(b0, a0))
    assert (np.abs(angle) <= 20).all() and np.abs(angle).max() > 10
    assert (scale >= 0.8 - 1e-6).all() and (scale <= 1.2 + 1e-6).all()
    # Without a shift the centre stays where it is.
    centre = 23.5
    assert np.allclose(a0 * centre + a1 * centre + a2, centre, atol=1e-4)
    assert np.allclose(b0 * centre + b1 * centre + b2, centre, atol=1e-4)
    assert np.allclose(maps[:, 6:], 0)


def test_no_layer_of_the_profiles_switches_jit_off() -> None:
    for name in ("cpu", "gpu"):
        config = TrainConfig.profile(name)
        model = build_model(config.network, (48, 48, 1), len(CLASSES))
        blockers = [layer.name for layer in model._flatten_layers() if not layer.supports_jit]
        assert blockers == [], name
        assert "aug_affine" in {layer.name for layer in model.layers}


def test_ten_crop_views_average_the_corner_crops_and_their_mirrors() -> None:
    from model.training.calibration import softmax

    network = build_model(SMALL, (48, 48, 1), len(CLASSES), seed=2)
    served = with_temperature(network, 1.5, flip_average=True, shift=4)
    x = _pixels(3, 1)
    logits = logits_model(network)
    views = []
    for dy, dx in [(0, 0), (-4, -4), (-4, 4), (4, -4), (4, 4)]:
        shifted = np.roll(x, (-dy, -dx), axis=(1, 2))  # the centre crop never sees the wrap
        views += [shifted, shifted[:, :, ::-1]]
    expected = softmax(np.mean([np.asarray(logits(v, training=False)) for v in views], 0), 1.5)
    assert np.abs(np.asarray(served(x, training=False)) - expected).max() < 1e-5
    # The four corner crops alone (no flips) are distinct views: not the centre's answer.
    corners = logits_model(with_temperature(network, 1.0, shift=4))(x, training=False)
    centre = logits(x, training=False)
    assert np.abs(np.asarray(corners) - np.asarray(centre)).max() > 1e-5


def test_shifted_views_need_centre_crop_training() -> None:
    with pytest.raises(ValueError, match="test_time_shifts needs centre-crop training"):
        TrainConfig(test_time_shifts=True)
    config = TrainConfig(test_time_shifts=True, network=SMALL)
    assert config.test_time_shift == 4
    assert TrainConfig.profile("gpu").test_time_shift == 4
    assert TrainConfig.profile("cpu").test_time_shift == 0


def test_the_gpu_profile_is_built_for_a_large_batch_and_a_short_budget() -> None:
    gpu = TrainConfig.model_validate(TrainConfig.profile("gpu").model_dump())  # valid
    assert gpu.batch_size == 512 and gpu.precision == "auto"
    assert gpu.time_budget_minutes is not None and gpu.time_budget_minutes <= 8
    assert gpu.test_time_flip and gpu.test_time_shifts
    model = build_model(gpu.network, (48, 48, 1), len(CLASSES))
    # Small enough to ship with float16 weights in 12 MB.
    assert 3_000_000 < model.count_params() < 6_000_000


def test_compact_files_store_half_the_bytes_and_load_as_float32(tmp_path: Path) -> None:
    from model.inference.predictor import load_keras_model, save_compact

    wide = SMALL.model_copy(update={"filters": (64, 128)})  # weights outweigh the metadata
    served = with_temperature(build_model(wide, (48, 48, 1), len(CLASSES), seed=1), 1.2, True)
    served.save(tmp_path / "full.keras")
    save_compact(served, tmp_path / "half.keras")
    full, half = (tmp_path / "full.keras").stat().st_size, (tmp_path / "half.keras").stat().st_size
    assert half < 0.7 * full
    loaded = load_keras_model(tmp_path / "half.keras")
    assert {w.dtype for w in loaded.weights} == {"float32"}
    x = _pixels(4, 2)
    expected = np.asarray(served(x, training=False))
    assert np.abs(np.asarray(loaded(x, training=False)) - expected).max() < 2e-3


@pytest.mark.parametrize(("flip", "shift"), [(False, 0), (True, 4)])
def test_a_saved_served_model_folds_its_batch_norm_for_export(
    tmp_path: Path, flip: bool, shift: int
) -> None:
    import keras

    from model.inference.predictor import load_keras_model
    from model.training.network import fold_served_model

    network = build_model(SMALL, (48, 48, 1), len(CLASSES), seed=3)
    rng = np.random.default_rng(4)
    for layer in network.layers:  # BatchNorm statistics far from the identity
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma * 1.5, beta + 0.2, mean + rng.normal(0, 0.3, mean.shape),
                               variance * rng.uniform(0.5, 2.0, variance.shape)])  # fmt: skip
    with_temperature(network, 1.3, flip, shift).save(tmp_path / "served.keras")
    served = load_keras_model(tmp_path / "served.keras")
    folded = fold_served_model(served, SMALL, (48, 48, 1))
    kinds = {type(layer).__name__ for layer in folded._flatten_layers()}
    assert "BatchNormalization" not in kinds and "FusedBatchNormalization" not in kinds
    x = _pixels(4, 5)
    expected = np.asarray(logits_model(served)(x, training=False))
    got = np.asarray(logits_model(folded)(x, training=False))
    assert np.abs(expected).max() > 0.05  # not a trivially small comparison
    assert np.abs(got - expected).max() < 1e-4
    assert np.allclose(folded(x, training=False), served(x, training=False), atol=1e-6)
