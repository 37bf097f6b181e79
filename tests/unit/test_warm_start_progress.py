"""Progress events from training, and warm start from a parent's weights (tiny images)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import keras
import numpy as np
import pytest

from model.contract import CLASSES
from model.inference.predictor import load_keras_model
from model.training.callbacks import EpochProgress
from model.training.config import TrainConfig, TrainResult
from model.training.fit import fit_model
from model.training.network import NetworkConfig, build_model, network_inside, with_temperature
from model.training.warmstart import Parent, network_difference, start_from
from tests.unit.test_network_train import SMALL, _separable

pytestmark = pytest.mark.unit


def _train(tmp_path: Path, name: str, config: TrainConfig, **kwargs: object) -> TrainResult:
    run_dir = tmp_path / name
    run_dir.mkdir()
    x, y = _separable(10)
    return fit_model(x, y, config, run_dir, **kwargs)  # type: ignore[arg-type]


def _served_parent(tmp_path: Path, network: NetworkConfig, seed: int = 7) -> Path:
    """A parent model file as a run saves it (served, with views), without training it."""
    model = build_model(network, (48, 48, 1), len(CLASSES), seed)
    keras.utils.set_random_seed(seed)  # other weights than the child's initialisation
    path = tmp_path / f"parent-{seed}.keras"
    with_temperature(model, 1.3, flip_average=True).save(path)
    return path


def _weights_at_start() -> keras.callbacks.Callback:
    """A callback keeping the weights the first training step starts from."""

    class Capture(keras.callbacks.Callback):
        def on_train_begin(self, logs: object = None) -> None:
            self.seen = self.model.get_weights()

    return Capture()


def test_each_epoch_reaches_the_listeners_with_its_count_and_metrics(tmp_path: Path) -> None:
    seen: list[EpochProgress] = []

    def broken(progress: EpochProgress) -> None:
        raise RuntimeError("display gone")

    config = TrainConfig(epochs=3, batch_size=32, network=SMALL, early_stopping_patience=None)
    # A failing display is logged and skipped: training and the other listeners go on.
    result = _train(tmp_path, "run", config, listeners=(broken, seen.append))
    assert result.epochs_run == 3
    assert [p.epoch for p in seen] == [1, 2, 3]
    assert all(p.planned == 3 for p in seen)
    assert {"accuracy", "val_accuracy", "loss"} <= set(seen[-1].metrics)
    assert seen[-1].fraction == 1.0 and seen[-1].remaining_seconds == 0
    assert seen[0].remaining_seconds > 0 and seen[0].elapsed_seconds > 0
    summary = seen[0].summary()
    assert summary.startswith("epoch 1/3: accuracy ") and "val_accuracy " in summary
    assert summary.endswith(" left")


def test_warm_start_begins_from_the_parents_weights(tmp_path: Path) -> None:
    base = TrainConfig(epochs=1, batch_size=32, network=SMALL, early_stopping_patience=None)
    parent = _served_parent(tmp_path, SMALL)
    expected = network_inside(load_keras_model(parent)).get_weights()

    capture = _weights_at_start()
    warm = base.model_copy(update={"warm_start": True, "learning_rate": 0.01})
    child = _train(tmp_path, "child", warm, callbacks=[capture], parent=Parent("v-parent", parent))

    assert len(capture.seen) == len(expected)
    for mine, theirs in zip(capture.seen, expected, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert child.warm_start is not None and child.warm_start.parent == "v-parent"
    # The restart's peak is warm_restart_lr (0.3) of the configured one.
    rates = json.loads(child.history_path.read_text())["learning_rate"]
    assert max(rates) == pytest.approx(0.01 * 0.3, rel=1e-4)


def test_another_architecture_starts_fresh_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wider = build_model(NetworkConfig(filters=(16,), dense_units=16), (48, 48, 1), 7)
    fresh = wider.get_weights()
    with caplog.at_level(logging.INFO, logger="model.training.warmstart"):
        warm = start_from(wider, Parent("v1", _served_parent(tmp_path, SMALL)))
    assert warm.parent is None and "weights do not fit" in warm.reason
    assert "training from scratch because champion v1's weights do not fit" in caplog.text
    for mine, before in zip(wider.get_weights(), fresh, strict=True):
        np.testing.assert_array_equal(mine, before)  # left as initialised


def test_no_parent_or_an_unreadable_one_starts_fresh_and_says_why(tmp_path: Path) -> None:
    model = build_model(SMALL, (48, 48, 1), 7)
    warm = start_from(model, None, "there is no champion yet")
    assert warm.to_json() == {"parent": None, "reason": "there is no champion yet"}
    broken = tmp_path / "model.keras"
    broken.write_bytes(b"not a model")
    warm = start_from(model, Parent("v2", broken))
    assert warm.parent is None and warm.reason.startswith("champion v2's model could not be read")


def test_without_a_parent_the_peak_learning_rate_is_kept(tmp_path: Path) -> None:
    config = TrainConfig(
        epochs=1, batch_size=32, network=SMALL, warm_start=True, learning_rate=0.01
    )
    child = _train(tmp_path, "child", config, no_parent_reason="there is no champion yet")
    assert child.warm_start is not None and child.warm_start.parent is None
    rates = json.loads(child.history_path.read_text())["learning_rate"]
    assert max(rates) == pytest.approx(0.01, rel=1e-4)


def test_network_difference_ignores_what_has_no_weights() -> None:
    mine = NetworkConfig(filters=(8, 16), dense_dropout=0.5)
    same_weights = mine.model_copy(update={"dense_dropout": 0.1, "fused_batch_norm": True})
    assert network_difference(mine, same_weights.model_dump(mode="json")) == ""
    other = mine.model_copy(update={"filters": (16, 32)}).model_dump(mode="json")
    assert network_difference(mine, other) == "filters [8, 16] here, [16, 32] there"
    assert "filters" in network_difference(mine, {})  # a manifest without a network


def test_only_the_nightly_profiles_warm_start() -> None:
    assert TrainConfig.profile("cpu").warm_start and TrainConfig.profile("gpu").warm_start
    assert not TrainConfig.profile("quick").warm_start


def test_the_display_draws_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    from flows.progress import ProgressDisplay

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    display = ProgressDisplay(terminal)
    display.show("train_model", 40.0, "epoch 2/5: accuracy 0.5000, 0:30 left")
    display.close()
    assert "stage: train_model" in terminal.getvalue()
    assert "40%" in terminal.getvalue() and "epoch 2/5" in terminal.getvalue()

    lines = io.StringIO()
    display = ProgressDisplay(lines)
    for _ in range(2):  # an unchanged state is not repeated
        display.show("train_model", 40.0, "epoch 2/5: accuracy 0.5000, 0:30 left")
    display.show(None, 60.0, "epoch 3/5: accuracy 0.6000, 0:20 left")
    assert lines.getvalue().splitlines() == [
        "stage: train_model",
        "training: epoch 2/5: accuracy 0.5000, 0:30 left",
        "training: epoch 3/5: accuracy 0.6000, 0:20 left",
    ]
    quiet = io.StringIO()
    ProgressDisplay(quiet, epoch_lines=False).show("evaluate_model", 100.0, "done")
    assert quiet.getvalue() == "stage: evaluate_model\n"


def test_ema_validates_keeps_and_serves_the_averaged_weights(tmp_path: Path) -> None:
    class Capture(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: object = None) -> None:
            self.raw = self.model.get_weights()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            self.kept = self.model.get_weights()  # after the swap: the average

    capture = Capture()
    config = TrainConfig(epochs=1, batch_size=16, network=SMALL, ema_momentum=0.9)
    result = _train(tmp_path, "run", config, callbacks=[capture])
    served = network_inside(load_keras_model(result.model_path)).get_weights()
    for mine, kept in zip(served, capture.kept, strict=True):
        np.testing.assert_array_equal(mine, kept)
    assert any(not np.array_equal(k, r) for k, r in zip(capture.kept, capture.raw, strict=True))


def test_the_quick_profile_stops_at_its_budget_whatever_the_cpu(tmp_path: Path) -> None:
    quick = TrainConfig.profile("quick")
    assert quick.time_budget_minutes is not None and quick.epoch_fraction < 1
    # The profile as shipped, with a budget of 6 s instead of 4 minutes.
    config = quick.model_copy(update={"time_budget_minutes": 0.1})
    result = _train(tmp_path, "run", config)
    seconds = json.loads(result.history_path.read_text())["epoch_seconds"]
    assert result.epochs_run < quick.epochs  # the budget ended it, not the epoch cap
    # No epoch started that was expected to end past the budget (one typical epoch of slack).
    assert sum(seconds) <= 6 + max(seconds[1:] or seconds)
