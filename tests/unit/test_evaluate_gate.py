from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.errors import GateFailed
from model.evaluation.gate import ChampionScore, GateConfig, decide, enforce
from model.evaluation.metrics import compute_metrics, plot_confusion

pytestmark = pytest.mark.unit


def _metrics(correct: int, total: int = 10):
    y_true = np.array([k % 7 for k in range(total)])
    y_pred = y_true.copy()
    y_pred[correct:] = (y_pred[correct:] + 1) % 7
    return compute_metrics(y_true, y_pred, fingerprint="f" * 64)


def test_metrics_follow_sklearn_definitions() -> None:
    metrics = _metrics(correct=7)
    assert metrics.accuracy == pytest.approx(0.7)
    assert metrics.n_test == 10
    assert sum(map(sum, metrics.confusion)) == 10
    assert sum(metrics.confusion[k][k] for k in range(7)) == 7
    # Labels 0,1,2,3,4,5,6,0,1,2; the last three predictions are shifted by one class.
    assert metrics.per_class["angry"].support == 2
    assert metrics.per_class["angry"].recall == pytest.approx(0.5)
    assert metrics.per_class["happy"].recall == pytest.approx(1.0)
    assert metrics.per_class["disgust"].precision == pytest.approx(0.5)


def test_confusion_plot_is_written(tmp_path: Path) -> None:
    path = plot_confusion(_metrics(correct=5), tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_passes_at_the_floor_and_fails_below() -> None:
    assert decide(_metrics(correct=5), GateConfig(min_accuracy=0.5)).passed
    decision = decide(_metrics(correct=4), GateConfig(min_accuracy=0.5))
    assert not decision.passed
    assert "0.4000 is below the floor 0.5000" in decision.reasons[0]


def test_enforce_raises_with_every_reason() -> None:
    decision = decide(_metrics(correct=1), GateConfig(min_accuracy=0.99))
    with pytest.raises(GateFailed) as error:
        enforce(decision)
    assert error.value.reasons == list(decision.reasons)
    assert "below the floor" in str(error.value)
    enforce(decide(_metrics(correct=10), GateConfig(min_accuracy=0.99)))


def test_gate_config_is_validated() -> None:
    with pytest.raises(ValueError):
        GateConfig(min_accuracy=1.5)
    with pytest.raises(ValueError):
        GateConfig(max_regression=-0.1)


def test_every_failed_criterion_is_reported_at_once() -> None:
    # 7 of 10 right: accuracy 0.7; angry, disgust and fear (labels 0, 1, 2 appear twice and
    # are missed once each) have recall 0.5.
    config = GateConfig(min_accuracy=0.8, min_macro_f1=0.9, min_class_recall=0.6)
    decision = decide(_metrics(correct=7), config)
    assert not decision.passed
    assert len(decision.reasons) == 5
    assert "test accuracy 0.7000 is below the floor 0.8000" in decision.reasons[0]
    assert "macro F1" in decision.reasons[1] and "min_macro_f1" in decision.reasons[1]
    assert [r.split()[0] for r in decision.reasons[2:]] == ["angry", "disgust", "fear"]
    # Every criterion is listed with its value, passed or not: 2 floors + 7 classes.
    assert len(decision.checks) == 9
    assert sum(check.startswith("FAIL") for check in decision.checks) == 5
    with pytest.raises(GateFailed) as error:
        enforce(decision)
    assert len(error.value.reasons) == 5


def test_challenger_may_trail_the_champion_by_the_margin_only() -> None:
    champion = ChampionScore(version="v1", accuracy=0.75, macro_f1=0.7, rescored=False)
    config = GateConfig(min_accuracy=0.0, max_regression=0.05)
    assert decide(_metrics(correct=8), config, champion).passed  # 0.80 > 0.75
    assert decide(_metrics(correct=7), config, champion).passed  # 0.70 = 0.75 - 0.05
    worse = decide(_metrics(correct=6), config, champion)
    assert not worse.passed
    assert worse.reasons == (
        "test accuracy 0.6000 vs champion v1's 0.7500 (same test data), margin 0.0500 "
        "(GateConfig.max_regression): worse by more",
    )
    assert worse.champion == champion
    rescored = champion.model_copy(update={"rescored": True})
    assert "re-scored on this test data" in decide(_metrics(correct=6), config, rescored).reasons[0]
    assert not any("champion" in c for c in decide(_metrics(correct=6), config).checks)
