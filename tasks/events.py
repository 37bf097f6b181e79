"""Events the retrain flow emits, so automations and other systems can react to its outcome.

``fer.model.promoted``, ``fer.gate.refused`` and ``fer.data.refused`` from the retrain flow,
``fer.serving.drift`` from the daily health report. Prefect relates each to the flow run (and
its flow, deployment and tags) that emitted it; the payload says what happened in terms a
message or a dashboard can show.
"""

from __future__ import annotations

from prefect.events import emit_event

from model.evaluation.gate import Decision
from model.monitoring.report import HealthReport
from model.registry.store import ChampionPointer
from validation.report import QualityReport

PROMOTED = "fer.model.promoted"
GATE_REFUSED = "fer.gate.refused"
DATA_REFUSED = "fer.data.refused"
SERVING_DRIFT = "fer.serving.drift"


def model_promoted(pointer: ChampionPointer, accuracy: float) -> None:
    """A version became the champion: which, its test accuracy, and the one it replaced."""
    emit_event(
        PROMOTED,
        resource={"prefect.resource.id": f"fer.model.{pointer.version}",
                  "prefect.resource.name": pointer.version},
        payload={"version": pointer.version, "accuracy": accuracy, "previous": pointer.previous},
    )  # fmt: skip


def gate_refused(decision: Decision) -> None:
    """The gate refused the challenger: every criterion it failed."""
    emit_event(
        GATE_REFUSED,
        resource={"prefect.resource.id": "fer.gate", "prefect.resource.name": "promotion gate"},
        payload={
            "failed": list(decision.reasons),
            "champion": decision.champion.version if decision.champion else None,
        },
    )


def data_refused(report: QualityReport) -> None:
    """The data-quality check failed: every critical check, with its message."""
    emit_event(
        DATA_REFUSED,
        resource={"prefect.resource.id": f"fer.dataset.{report.fingerprint}",
                  "prefect.resource.name": report.root},
        payload={"failed": {o.name: o.message for o in report.critical_failures}},
    )  # fmt: skip


def serving_drift(report: HealthReport) -> None:
    """The daily report flagged emotions whose share of predictions moved week over week."""
    emit_event(
        SERVING_DRIFT,
        resource={"prefect.resource.id": "fer.serving", "prefect.resource.name": "FER serving"},
        payload={
            "threshold": report.drift.threshold,
            "moved": {shift.emotion: {"this_week": shift.this_week, "last_week": shift.last_week}
                      for shift in report.drift.flagged},
            "champion": report.champion.version if report.champion else None,
        },
    )  # fmt: skip
