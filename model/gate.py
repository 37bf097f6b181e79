"""The promotion gate: every criterion is checked, all failures are reported together."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from model.errors import GateFailed
from model.evaluate import Metrics


class GateConfig(BaseModel):
    """Promotion criteria (a flow parameter, so it shows in the Prefect UI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_accuracy: float = Field(
        0.40, ge=0.0, le=1.0, description="Lowest test accuracy a model may be promoted with."
    )


class Decision(BaseModel):
    """The gate's verdict with one line per failed criterion."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    reasons: tuple[str, ...] = ()


def decide(metrics: Metrics, config: GateConfig) -> Decision:
    """Check a model's metrics against every criterion.

    Args:
        metrics: the challenger's test metrics.
        config: the criteria.

    Returns:
        A decision; ``reasons`` lists each failed criterion.
    """
    reasons: list[str] = []
    if metrics.accuracy < config.min_accuracy:
        reasons.append(
            f"test accuracy {metrics.accuracy:.4f} is below the floor {config.min_accuracy:.4f} "
            "(GateConfig.min_accuracy)"
        )
    return Decision(passed=not reasons, reasons=tuple(reasons))


def enforce(decision: Decision) -> None:
    """Raise once with every failed criterion when the decision did not pass.

    Args:
        decision: the gate's verdict.

    Raises:
        GateFailed: listing every reason.
    """
    if not decision.passed:
        raise GateFailed(list(decision.reasons))
