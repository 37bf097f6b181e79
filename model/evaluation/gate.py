"""The promotion gate: every criterion is checked, all failures are reported together.

Two kinds of criteria: absolute floors on the challenger's test metrics, and a comparison
with the current champion on the *same* test data (the champion is re-scored when the
dataset changed since it was measured, so no numbers from different data are compared).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from model.errors import GateFailed

if TYPE_CHECKING:  # the metrics module loads scikit-learn; the gate's config is wanted light
    from model.evaluation.metrics import Metrics

logger = logging.getLogger(__name__)


class GateConfig(BaseModel):
    """Promotion criteria (a flow parameter, so it shows in the Prefect UI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_accuracy: float = Field(
        0.40, ge=0.0, le=1.0, description="Lowest test accuracy a model may be promoted with."
    )
    min_macro_f1: float = Field(
        0.0, ge=0.0, le=1.0, description="Lowest test macro F1 (0: no floor)."
    )
    min_class_recall: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Lowest test recall of every single class (0: no floor); catches a model "
        "that gave up on a rare class such as disgust.",
    )
    max_regression: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="How much lower than the champion's test accuracy, on the same test data, "
        "the challenger's may be (1: no comparison).",
    )


class ChampionScore(BaseModel):
    """The champion's accuracy on the challenger's test data."""

    model_config = ConfigDict(frozen=True)

    version: str
    accuracy: float
    macro_f1: float
    rescored: bool = Field(
        description="Re-evaluated in this run because its recorded metrics came from other data."
    )


class Decision(BaseModel):
    """The gate's verdict: each criterion with its value, and one line per failure."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    reasons: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    champion: ChampionScore | None = None


def decide(metrics: Metrics, config: GateConfig, champion: ChampionScore | None = None) -> Decision:
    """Check a model's metrics against every criterion.

    Args:
        metrics: the challenger's test metrics.
        config: the criteria.
        champion: the current champion scored on the same test data (None: no champion yet).

    Returns:
        A decision; ``checks`` lists every criterion with its value, ``reasons`` each
        failed one.
    """
    checks = [
        _floor("test accuracy", metrics.accuracy, config.min_accuracy, "min_accuracy"),
        _floor("macro F1", metrics.macro_f1, config.min_macro_f1, "min_macro_f1"),
    ]
    checks += [
        _floor(f"{name} recall", scores.recall, config.min_class_recall, "min_class_recall")
        for name, scores in metrics.per_class.items()
    ]
    if champion is not None:
        lowest = champion.accuracy - config.max_regression
        data = "re-scored on this test data" if champion.rescored else "same test data"
        compared = (
            f"test accuracy {metrics.accuracy:.4f} vs champion {champion.version}'s "
            f"{champion.accuracy:.4f} ({data}), margin {config.max_regression:.4f} "
            "(GateConfig.max_regression)"
        )
        checks.append((metrics.accuracy >= lowest, compared, f"{compared}: worse by more"))
    reasons = tuple(reason for ok, _, reason in checks if not ok)
    return Decision(
        passed=not reasons,
        reasons=reasons,
        checks=tuple(f"{'pass' if ok else 'FAIL'}: {line}" for ok, line, _ in checks),
        champion=champion,
    )


def _floor(what: str, value: float, floor: float, field: str) -> tuple[bool, str, str]:
    """(passed, the check as shown, the reason when it failed) of one floor."""
    return (
        value >= floor,
        f"{what} {value:.4f}, floor {floor:.4f} (GateConfig.{field})",
        f"{what} {value:.4f} is below the floor {floor:.4f} (GateConfig.{field})",
    )


def enforce(decision: Decision) -> None:
    """Raise once with every failed criterion when the decision did not pass.

    Args:
        decision: the gate's verdict.

    Raises:
        GateFailed: listing every reason.
    """
    if not decision.passed:
        raise GateFailed(list(decision.reasons))
