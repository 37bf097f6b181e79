"""TFLite export, the crop layer, class weights and the serving runtime choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.contract import CLASSES, EXPORT_FILE, TFLITE_FILE
from model.inference.predictor import Predictor, load_keras_model
from model.inference.tflite import TFLiteRunner
from model.training.export import export_tflite
from model.training.fit import class_weights
from model.training.network import (
    AugmentConfig,
    NetworkConfig,
    build_model,
    fold_batch_norm,
    with_temperature,
)

pytestmark = pytest.mark.unit

NETWORK = NetworkConfig(
    filters=(8, 16), batch_norm=True, head="gap", dense_units=16, augment=AugmentConfig(crop=40)
)


def _pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48, 1)).astype(np.uint8)


def test_tflite_export_matches_keras_on_unseen_images(tmp_path: Path) -> None:
    model = build_model(NETWORK, (48, 48, 1), len(CLASSES), seed=1)
    report = export_tflite(model, tmp_path / TFLITE_FILE, _pixels(16, 0))

    assert report is not None and report["checked_images"] == 16
    assert json.loads((tmp_path / EXPORT_FILE).read_text()) == report
    runner = TFLiteRunner(tmp_path / TFLITE_FILE)
    for batch in (1, 5, 1):  # the interpreter is resized when the batch size changes
        pixels = _pixels(batch, batch + 10)
        expected = np.asarray(model(pixels.astype(np.float32), training=False))
        got = runner(pixels)
        assert got.shape == (batch, len(CLASSES))
        assert np.abs(got - expected).max() < 1e-4


def test_predictor_serves_the_tflite_export_when_present(tmp_path: Path) -> None:
    model = build_model(NETWORK, (48, 48, 1), len(CLASSES), seed=2)
    model.save(tmp_path / "model.keras")
    keras_only = Predictor.from_file(tmp_path / "model.keras")
    assert keras_only.runtime == "keras"

    export_tflite(model, tmp_path / TFLITE_FILE, _pixels(4, 0))
    fast = Predictor.from_file(tmp_path / "model.keras", version="v9")
    assert (fast.runtime, fast.version) == ("tflite", "v9")
    pixels = _pixels(3, 7)
    assert np.abs(fast.predict_batch(pixels) - keras_only.predict_batch(pixels)).max() < 1e-4
    assert Predictor.from_file(tmp_path / "model.keras", prefer_tflite=False).runtime == "keras"


def test_training_crop_takes_a_window_per_image_and_is_inert_at_inference(
    tmp_path: Path,
) -> None:
    model = build_model(NETWORK, (48, 48, 1), len(CLASSES), seed=3)
    crop = model.get_layer("aug_crop")
    pixels = _pixels(6, 1).astype(np.float32)
    crops = np.asarray(crop(pixels, training=True))
    assert crops.shape == (6, 40, 40, 1)
    offsets = []
    for image, window in zip(pixels, crops, strict=True):
        found = [
            (row, col)
            for row in range(9)
            for col in range(9)
            if np.array_equal(window, image[row : row + 40, col : col + 40])
        ]
        assert found, "a crop is not a window of its own image"
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # drawn per image, not once per batch
    assert np.array_equal(np.asarray(crop(pixels, training=False)), pixels)

    model.save(tmp_path / "crop.keras")
    loaded = load_keras_model(tmp_path / "crop.keras")  # safe mode: the layer is registered
    expected = np.asarray(model(pixels, training=False))
    assert np.array_equal(np.asarray(loaded(pixels, training=False)), expected)


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [("none", [1.0, 1.0, 0.0]), ("sqrt", [5 / 6, 5 / 3, 0.0]), ("balanced", [0.625, 2.5, 0.0])],
)
def test_class_weights_lift_rare_classes_and_average_one(
    scheme: str, expected: list[float]
) -> None:
    # 8 images of class 0, 2 of class 1, none of class 2 (which gets no weight).
    y = np.array([0] * 8 + [1] * 2)
    weights = class_weights(y, 3, scheme)
    assert weights.tolist() == pytest.approx(expected)
    assert weights[y].mean() == pytest.approx(1.0)


def test_flip_averaging_is_built_into_the_served_model_and_exports(tmp_path: Path) -> None:
    from model.training.calibration import softmax
    from model.training.network import logits_model

    network = build_model(NETWORK, (48, 48, 1), len(CLASSES), seed=4)
    served = with_temperature(network, 2.0, flip_average=True)
    pixels = _pixels(5, 3).astype(np.float32)
    logits = logits_model(network)
    plain = np.asarray(logits(pixels, training=False))
    mirrored = np.asarray(logits(pixels[:, :, ::-1], training=False))
    expected = softmax((plain + mirrored) / 2, 2.0)
    assert np.abs(np.asarray(served(pixels, training=False)) - expected).max() < 1e-5
    # A mirrored face gets the same answer: the served function is symmetric.
    again = np.asarray(served(pixels[:, :, ::-1], training=False))
    assert np.abs(again - expected).max() < 1e-5

    served.save(tmp_path / "model.keras")
    loaded = Predictor.from_file(tmp_path / "model.keras")
    assert np.abs(loaded.predict_batch(pixels.astype(np.uint8)) - expected).max() < 1e-5
    assert export_tflite(loaded.model, tmp_path / TFLITE_FILE, pixels) is not None
    fast = Predictor.from_file(tmp_path / "model.keras")
    assert fast.runtime == "tflite"
    assert np.abs(fast.predict_batch(pixels.astype(np.uint8)) - expected).max() < 1e-4


def test_centre_crop_inference_shows_the_network_what_it_trained_on(tmp_path: Path) -> None:
    from model.inference.layers import TrainingCrop

    pixels = _pixels(2, 5).astype(np.float32)
    centre = TrainingCrop(40, seed=0, inference="center")
    assert np.array_equal(np.asarray(centre(pixels, training=False)), pixels[:, 4:44, 4:44])
    assert np.asarray(centre(pixels, training=True)).shape == (2, 40, 40, 1)
    with pytest.raises(ValueError, match="inference must be 'full' or 'center'"):
        TrainingCrop(40, inference="corner")

    augment = AugmentConfig(crop=40, crop_inference="center")
    network = build_model(NETWORK.model_copy(update={"augment": augment}), (48, 48, 1), 7)
    network.save(tmp_path / "centre.keras")
    loaded = load_keras_model(tmp_path / "centre.keras")
    assert loaded.get_layer("aug_crop").inference == "center"
    expected = np.asarray(network(pixels, training=False))
    assert np.array_equal(np.asarray(loaded(pixels, training=False)), expected)


def test_a_failed_conversion_leaves_no_export_and_training_keeps_its_model(
    tmp_path: Path,
) -> None:
    class Unconvertible:
        def export(self, path: str, **_: object) -> None:
            Path(path).write_bytes(b"half-written")
            raise RuntimeError("converter crashed")

    assert export_tflite(Unconvertible(), tmp_path / TFLITE_FILE, _pixels(2, 0)) is None
    assert not (tmp_path / TFLITE_FILE).exists()
    assert not (tmp_path / EXPORT_FILE).exists()


def _randomise_batch_norm(model: object, seed: int) -> None:
    """Give every BatchNorm statistics and an affine map far from the identity."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:  # type: ignore[attr-defined]
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2, n), rng.normal(0, 1, n), rng.normal(0, 1, n),
                 rng.uniform(0.1, 3, n)]
            )  # fmt: skip


def test_folding_batch_norm_keeps_the_served_function_and_its_export(tmp_path: Path) -> None:
    import keras

    model = build_model(NETWORK, (48, 48, 1), len(CLASSES), seed=5)
    _randomise_batch_norm(model, 0)
    folded = fold_batch_norm(model, NETWORK, (48, 48, 1), seed=5)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    pixels = _pixels(8, 3).astype(np.float32)
    expected = np.asarray(model(pixels, training=False))
    assert np.abs(np.asarray(folded(pixels, training=False)) - expected).max() < 1e-5

    served = with_temperature(model, 0.8, flip_average=True)
    fast = with_temperature(folded, 0.8, flip_average=True)
    report = export_tflite(fast, tmp_path / TFLITE_FILE, _pixels(16, 4), reference=served)
    assert report is not None and report["max_abs_difference"] < 1e-4
    runner = TFLiteRunner(tmp_path / TFLITE_FILE)
    assert np.abs(runner(pixels) - np.asarray(served(pixels, training=False))).max() < 1e-4


def test_an_export_that_does_not_match_its_reference_is_not_kept(tmp_path: Path) -> None:
    model = build_model(NETWORK, (48, 48, 1), len(CLASSES), seed=6)
    other = build_model(NETWORK, (48, 48, 1), len(CLASSES), seed=7)
    _randomise_batch_norm(other, 1)
    assert export_tflite(other, tmp_path / TFLITE_FILE, _pixels(8, 5), reference=model) is None
    assert not (tmp_path / TFLITE_FILE).exists()


def test_folding_is_a_no_op_without_batch_norm() -> None:
    plain = NETWORK.model_copy(update={"batch_norm": False})
    model = build_model(plain, (48, 48, 1), len(CLASSES), seed=8)
    assert fold_batch_norm(model, plain, (48, 48, 1)) is model


def test_quantized_export_is_smaller_close_and_what_evaluation_scores(tmp_path: Path) -> None:
    from model.evaluation.metrics import load_scored, score_model

    model = build_model(NETWORK, (48, 48, 1), len(CLASSES), seed=9)
    _randomise_batch_norm(model, 2)
    model.save(tmp_path / "model.keras")
    report = export_tflite(model, tmp_path / TFLITE_FILE, _pixels(32, 6), quantize=True)
    assert report is not None
    assert report["quantization"] == "dynamic-range int8 weights"
    assert 0 < report["max_abs_difference"] <= 0.05  # int8 weights: close, not identical
    assert 0 <= report["top1_agreement"] <= 1
    float_export = tmp_path / "float" / TFLITE_FILE
    float_export.parent.mkdir()
    export_tflite(model, float_export, _pixels(4, 6))
    assert (tmp_path / TFLITE_FILE).stat().st_size < float_export.stat().st_size

    keras_model, served = load_scored(tmp_path / "model.keras")
    assert served is not None
    pixels = _pixels(40, 11)
    labels = np.asarray(served(pixels)).argmax(axis=1)  # labels the export gets all right
    metrics = score_model(keras_model, served, pixels, labels, "synthetic")
    assert (metrics.runtime, metrics.accuracy) == ("tflite", 1.0)
    (tmp_path / TFLITE_FILE).unlink()
    keras_only = score_model(*load_scored(tmp_path / "model.keras"), pixels, labels, "synthetic")
    assert keras_only.runtime == "keras"


def test_fused_batch_norm_matches_keras_batch_norm() -> None:
    """Same outputs, gradients and moving statistics as Keras's layer, in both modes."""
    import keras
    import tensorflow as tf

    from model.inference.layers import FusedBatchNormalization

    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (16, 10, 10, 4)), tf.float32)
    # Momentum 0: the moving statistics become this batch's, so any bias shows in full.
    plain = keras.layers.BatchNormalization(momentum=0.0)
    fused = FusedBatchNormalization(momentum=0.0)
    plain.build(x.shape)
    fused.build(x.shape)
    rng = np.random.default_rng(1)
    weights = [rng.uniform(0.5, 1.5, 4), rng.normal(0, 1, 4), rng.normal(0, 1, 4), np.ones(4)]
    # A random weighting: with a per-channel constant, the gamma and beta gradients vanish.
    upstream = tf.constant(rng.normal(0, 1, x.shape), tf.float32)
    plain.set_weights(weights)
    fused.set_weights(weights)
    results = []
    for layer in (plain, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
        results.append((y, grads, [w.copy() for w in layer.get_weights()]))
    (y0, g0, w0), (y1, g1, w1) = results
    np.testing.assert_allclose(y1, y0, atol=1e-4)
    for ours, theirs in zip(g1, g0, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-3)
    for ours, theirs in zip(w1, w0, strict=True):  # moving mean and variance updated alike
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-4)


def test_a_fused_batch_norm_network_trains_in_bfloat16_folds_and_loads_safely(
    tmp_path: Path,
) -> None:
    import keras

    from model.inference.layers import FusedBatchNormalization

    network = NETWORK.model_copy(update={"fused_batch_norm": True})
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(network, (48, 48, 1), len(CLASSES), seed=5)
    finally:
        keras.config.set_dtype_policy(previous)
    assert isinstance(model.get_layer("conv0a_bn"), FusedBatchNormalization)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    # A learnable batch (dark faces are class 0, bright ones class 3): random labels on
    # noise left the loss above its start in about one run of three.
    labels = np.repeat([0, 3], 8)
    pixels = _pixels(16, 2) // 4 + np.repeat([0, 192], 8)[:, None, None, None].astype(np.uint8)
    losses = [float(model.train_on_batch(pixels, labels)) for _ in range(10)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]

    plain = build_model(NETWORK, (48, 48, 1), len(CLASSES), seed=5)
    plain.set_weights(model.get_weights())  # same variables: the layers are interchangeable
    pixels = _pixels(8, 3).astype(np.float32)
    expected = np.asarray(plain(pixels, training=False))
    folded = fold_batch_norm(model, network, (48, 48, 1), seed=5)
    assert np.abs(np.asarray(folded(pixels, training=False)) - expected).max() < 1e-2
    model.save(tmp_path / "fused.keras")
    loaded = load_keras_model(tmp_path / "fused.keras")  # safe mode: the class is registered
    assert isinstance(loaded.get_layer("conv0a_bn"), FusedBatchNormalization)
