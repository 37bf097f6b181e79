"""Events the retrain flow emits, so automations and other systems can react to its outcome.

``fer.model.promoted``, ``fer.gate.refused`` and ``fer.data.refused``. Prefect relates each
to the flow run (and its flow, deployment and tags) that emitted it; the payload says what
happened in terms a message or a dashboard can show.
"""

from __future__ import annotations

from prefect.events import emit_event

from model.evaluation.gate import Decision
from model.registry.store import ChampionPointer
from validation.report import QualityReport

PROMOTED = "fer.model.promoted"
GATE_REFUSED = "fer.gate.refused"
DATA_REFUSED = "fer.data.refused"


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
