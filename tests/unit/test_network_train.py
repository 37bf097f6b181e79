from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.contract import CLASSES
from model.inference.predictor import Predictor, load_keras_model
from model.training.config import TrainConfig, TrainResult
from model.training.fit import fit_model, split_train_validation
from model.training.hardware import cpu_flags, native_bfloat16
from model.training.network import AugmentConfig, NetworkConfig, build_model

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
    config = TrainConfig(
        epochs=4, batch_size=16, learning_rate=3e-3, network=SMALL, precision="auto"
    )
    result = fit_model(x, y, config, tmp_path)
    history = json.loads(result.history_path.read_text())
    assert history["loss"][-1] < history["loss"][0]
    assert result.epochs_run == 4
    # No GPU in the tests: auto trains in bfloat16 only where this CPU has it natively.
    native = native_bfloat16(cpu_flags())
    assert result.precision == ("mixed_bfloat16" if native else "float32")
    curves = result.run_dir / "training_curves.png"
    assert curves.read_bytes().startswith(b"\x89PNG")
    predictor = Predictor.from_file(result.model_path)
    assert predictor.runtime == "tflite"  # the export is made with every trained model
    assert result.tflite_path == result.run_dir / "serving.tflite"
    probabilities = predictor.predict(x[0, ..., 0])
    assert list(probabilities) == list(CLASSES)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_train_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainConfig(validation_fraction=0.9)


def test_time_budget_stops_early_and_keeps_the_best_epoch(tmp_path: Path) -> None:
    x, y = _separable(10)
    # A budget of about two epochs (after the slow first one) out of 100.
    config = TrainConfig(epochs=100, batch_size=32, network=SMALL, time_budget_minutes=0.05)
    result = fit_model(x, y, config, tmp_path)
    history = json.loads(result.history_path.read_text())
    assert 1 <= result.epochs_run < 100
    assert len(history["val_accuracy"]) == result.epochs_run
    assert result.best_val_accuracy == max(history["val_accuracy"])
    assert not (tmp_path / "resume").exists()  # the backup is removed once the model is saved


def test_killed_run_resumes_from_its_last_epoch(tmp_path: Path) -> None:
    """Train in a child process that is killed after its second epoch, then resume here."""
    import subprocess
    import sys
    import textwrap

    resume = tmp_path / "resume"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        import keras
        from model.training.config import TrainConfig
        from model.training.fit import fit_model
        from model.training.network import NetworkConfig
        from tests.unit.test_network_train import _separable

        class Kill(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    os.kill(os.getpid(), signal.SIGKILL)

        x, y = _separable(10)
        config = TrainConfig(epochs=4, batch_size=32, early_stopping_patience=None,
                             network=NetworkConfig(filters=(8,), dense_units=16))
        fit_model(x, y, config, Path({str(tmp_path)!r}), Path({str(resume)!r}), [Kill()])
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert child.returncode == -9, child.stderr[-2000:]
    state = json.loads((resume / "plan.json").read_text())
    assert len(state["seconds"]) == 2 and (resume / "best.keras").exists()

    x, y = _separable(10)
    config = TrainConfig(epochs=4, batch_size=32, early_stopping_patience=None, network=SMALL)
    result = fit_model(x, y, config, tmp_path, resume)

    assert result.epochs_run == 4  # 2 before the kill, 2 after
    history = json.loads(result.history_path.read_text())
    assert len(history["loss"]) == 4
    assert history["loss"][:2] == [epoch["loss"] for epoch in state["history"]]
    assert not resume.exists()


def test_mixed_precision_trains_and_saves_a_float32_model(tmp_path: Path) -> None:
    x, y = _separable(10)
    augment = AugmentConfig(erase=0.5, crop=40)
    network = NetworkConfig(
        filters=(8,), dense_units=16, batch_norm=True, head="gap", augment=augment
    )
    config = TrainConfig(
        epochs=2,
        batch_size=32,
        network=network,
        precision="mixed_bfloat16",
        class_weighting="sqrt",
    )
    result = fit_model(x, y, config, tmp_path)
    assert result.precision == "mixed_bfloat16"

    model = load_keras_model(result.model_path)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    # Augmentation is part of the model but inactive outside training.
    first = np.asarray(model(x[:4].astype(np.float32), training=False))
    again = np.asarray(model(x[:4].astype(np.float32), training=False))
    assert np.array_equal(first, again)
    assert any(layer.name.startswith("aug_") for layer in model.layers)


def test_same_data_config_and_seed_train_the_same_model(tmp_path: Path) -> None:
    x, y = _separable(10)
    network = NetworkConfig(
        filters=(8,), dense_units=16, batch_norm=True, head="gap", augment=AugmentConfig(crop=44)
    )
    config = TrainConfig(epochs=2, batch_size=32, network=network, class_weighting="sqrt")
    first = fit_model(x, y, config, tmp_path / "a")
    again = fit_model(x, y, config, tmp_path / "b")
    other = fit_model(x, y, config.model_copy(update={"seed": 7}), tmp_path / "c")

    def losses(result: TrainResult) -> list[float]:
        return json.loads(result.history_path.read_text())["loss"]

    assert losses(first) == losses(again)
    assert losses(first) != losses(other)


def test_mirrored_strategy_trains_across_two_replicas(tmp_path: Path) -> None:
    """The multi-GPU code path, on two logical CPU devices in a child process.

    Logical devices must be configured before TensorFlow starts, hence the child. Two
    replicas take the same code path as two GPUs: variables mirrored under the strategy's
    scope, each global batch split in two, gradients all-reduced. The net has the profiles'
    fused BatchNorm, whose moving statistics are updated inside each replica.
    """
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import json
        from pathlib import Path
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        from model.training.network import NetworkConfig
        from model.training.config import TrainConfig
        from model.training.fit import fit_model
        from tests.unit.test_network_train import _separable

        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        x, y = _separable(20)
        config = TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3,
                             network=NetworkConfig(filters=(8,), dense_units=16,
                                                   batch_norm=True, fused_batch_norm=True))
        result = fit_model(x, y, config, Path({str(tmp_path)!r}), strategy=strategy)
        from model.inference.predictor import load_keras_model
        norm = load_keras_model(result.model_path).get_layer("conv0a_bn")
        print("RESULT", json.dumps({{"replicas": strategy.num_replicas_in_sync,
                                     "epochs": result.epochs_run,
                                     "norm": type(norm).__name__,
                                     "moving_mean": float(abs(norm.moving_mean.numpy()).max()),
                                     "model": str(result.model_path)}}))
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr[-3000:]
    line = next(line for line in child.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["replicas"] == 2
    assert result["epochs"] == 3
    assert result["norm"] == "FusedBatchNormalization"
    assert result["moving_mean"] > 0  # the statistics moved from their initial zeros
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["loss"][-1] < history["loss"][0]
    x, y = _separable(20)
    predictor = Predictor.from_file(Path(result["model"]))
    probabilities = predictor.predict(x[0, ..., 0])
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_distribution_strategy_is_chosen_by_name() -> None:
    from model.errors import ConfigError
    from model.training.fit import distribution_strategy

    assert distribution_strategy("none") is None
    with pytest.raises(ConfigError, match="none or mirrored"):
        distribution_strategy("horovod")  # type: ignore[arg-type]


def test_a_run_that_is_not_resumable_ignores_what_a_killed_run_left(tmp_path: Path) -> None:
    x, y = _separable(6)
    config = TrainConfig(epochs=2, batch_size=16, resumable=False, network=SMALL)
    resume = tmp_path / "resume"
    resume.mkdir()
    stale = {"seconds": [1.0] * 5, "history": [{"loss": 9.0}] * 5, "best": 0.99}
    (resume / "plan.json").write_text(json.dumps(stale))
    result = fit_model(x, y, config, tmp_path, resume)
    assert result.epochs_run == 2
    assert json.loads(result.history_path.read_text())["loss"][0] != 9.0
    assert len(json.loads(result.history_path.read_text())["loss"]) == 2
