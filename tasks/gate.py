"""Task: decide whether the challenger may be promoted; fail the run when not."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from model.contract import DatasetRef
from model.evaluation.gate import Decision, GateConfig, decide, enforce
from model.evaluation.metrics import Metrics
from model.registry.champion import score_champion
from model.registry.store import ModelRegistry
from tasks import events
from tasks.common import retrying, settings


@task(
    name="check_gate",
    **retrying(2, first_delay_seconds=10),
    timeout_seconds=1800,
)
def check_gate_task(
    metrics: Metrics, config: GateConfig, ref: DatasetRef, work_dir: Path
) -> Decision:
    """Apply the gate (floors, then the champion on the same test data).

    Raises ``GateFailed`` listing every failed criterion; the decision is a Prefect artifact.
    """
    registry = ModelRegistry.from_settings(settings())
    champion = score_champion(registry, ref, settings().home_dir, work_dir)
    decision = decide(metrics, config, champion)
    verdict = "**passed**" if decision.passed else "**failed**"
    create_markdown_artifact(
        key="gate-decision",
        markdown=verdict + "\n\n" + "\n".join(f"- {check}" for check in decision.checks),
        description="Promotion gate decision, criterion by criterion",
    )
    get_run_logger().info("gate %s", "passed" if decision.passed else "failed")
    if not decision.passed:
        events.gate_refused(decision)
    enforce(decision)
    return decision
