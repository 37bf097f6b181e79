"""Tasks: publish a gated model as an immutable version, then promote it."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from model.contract import DatasetRef
from model.evaluation.gate import Decision
from model.evaluation.metrics import Metrics
from model.registry.lineage import publish_run
from model.registry.store import ChampionPointer, ModelRegistry
from model.training.config import TrainConfig, TrainResult
from tasks import events
from tasks.common import retrying, settings


@task(
    name="publish_model",
    # A store outage outlasting boto3's own retries.
    **retrying(3, first_delay_seconds=10),
    timeout_seconds=1800,
)
def publish_model_task(
    trained: TrainResult,
    metrics: Metrics,
    ref: DatasetRef,
    train_config: TrainConfig,
    decision: Decision,
) -> str:
    """Upload the model, its reports and manifest; returns the new version id."""
    registry = ModelRegistry.from_settings(settings())
    version, reports = publish_run(registry, trained, metrics, ref, train_config, decision)
    create_markdown_artifact(
        key="model-version",
        markdown=(
            f"Published **{version}**: test accuracy {metrics.accuracy:.4f}, "
            f"macro F1 {metrics.macro_f1:.4f}, dataset `{ref.fingerprint[:12]}`\n\n"
            f"- files: `{registry.uri('models/' + version)}/`\n"
            f"- manifest: `{registry.uri('models/' + version + '/manifest.json')}`\n"
            f"- reports: `{reports}/`"
        ),
        description="The immutable model version this run published",
    )
    get_run_logger().info("published model version %s", version)
    return version


@task(
    name="promote_version",
    **retrying(3, first_delay_seconds=5),
    timeout_seconds=300,
)
def promote_version_task(version: str, accuracy: float) -> ChampionPointer:
    """Move the champion pointer to ``version`` (compare-and-swap); announce it.

    Args:
        version: the published version.
        accuracy: its test accuracy, for the ``fer.model.promoted`` event.
    """
    registry = ModelRegistry.from_settings(settings())
    pointer = registry.promote(version)
    events.model_promoted(pointer, accuracy)
    create_markdown_artifact(
        key="champion",
        markdown=(
            f"Champion is now **{pointer.version}** "
            f"(previous: {pointer.previous or 'none'}), "
            f"`{registry.uri('models/' + pointer.version)}/`"
        ),
        description="Champion pointer after this run",
    )
    return pointer
