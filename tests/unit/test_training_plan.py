"""The learning-rate plan and the time budget, as pure functions."""

from __future__ import annotations

import math

import pytest

from model.training.callbacks import learning_rate_at, plan_epochs

pytestmark = pytest.mark.unit


def test_without_a_budget_the_plan_is_the_configured_epochs() -> None:
    assert plan_epochs(30, 0, [], None) == 30
    assert plan_epochs(30, 5, [10.0] * 5, None) == 30


def test_the_budget_plans_as_many_typical_epochs_as_fit() -> None:
    # The first epoch (tracing) is slow and left out of the typical duration.
    assert plan_epochs(100, 2, [30.0, 10.0], budget=100.0) == 2 + 6
    assert plan_epochs(5, 2, [30.0, 10.0], budget=1000.0) == 5  # capped by the maximum
    assert plan_epochs(100, 3, [10.0, 10.0, 10.0], budget=25.0) == 3  # never below done
    assert plan_epochs(100, 0, [], budget=25.0) == 100  # nothing timed yet


def test_cosine_with_warmup() -> None:
    assert learning_rate_at(0.0, 0.1, 0.1, "cosine") == 0.0
    assert learning_rate_at(0.05, 0.1, 0.1, "cosine") == pytest.approx(0.05)
    assert learning_rate_at(0.1, 0.1, 0.1, "cosine") == pytest.approx(0.1)
    assert learning_rate_at(0.55, 0.1, 0.1, "cosine") == pytest.approx(0.05)
    assert learning_rate_at(1.0, 0.1, 0.1, "cosine") == pytest.approx(0.0, abs=1e-12)
    middle = learning_rate_at(0.3, 0.1, 0.0, "cosine")
    assert middle == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.3)))


def test_constant_schedule_keeps_the_peak_after_warmup() -> None:
    assert learning_rate_at(0.5, 0.01, 0.0, "constant") == 0.01
    assert learning_rate_at(0.02, 0.01, 0.1, "constant") == pytest.approx(0.002)
