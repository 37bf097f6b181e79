"""Task: decide whether the challenger may be promoted; fail the run when not."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from model.evaluate import Metrics
from model.gate import Decision, GateConfig, decide, enforce


@task(name="check_gate")
def check_gate_task(metrics: Metrics, config: GateConfig) -> Decision:
    """Apply the gate; raises ``GateFailed`` listing every failed criterion."""
    decision = decide(metrics, config)
    create_markdown_artifact(
        key="gate-decision",
        markdown=(
            "**passed**"
            if decision.passed
            else "**failed**\n\n" + "\n".join(f"- {reason}" for reason in decision.reasons)
        ),
        description="Promotion gate decision",
    )
    get_run_logger().info("gate %s", "passed" if decision.passed else "failed")
    enforce(decision)
    return decision
