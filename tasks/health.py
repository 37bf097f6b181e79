"""Tasks of the daily health report: check the serving replicas, publish what was found."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_image_artifact, create_table_artifact

from model.monitoring.daily import HealthCheck, check_serving_health
from model.registry.store import ModelRegistry
from tasks import events
from tasks.common import retrying, settings

#: The artifacts' keys: each day's report is a new version of the same two artifacts.
REPORT_KEY = "fer-health"
CHART_KEY = "fer-health-chart"


@task(name="check_serving_health", **retrying(2, first_delay_seconds=10), timeout_seconds=600)
def check_serving_health_task(
    metrics_urls: list[str], threshold: float, min_predictions: int, work_dir: Path
) -> HealthCheck:
    """Read the replicas' metrics and the store; keep the snapshot and the chart in the store."""
    check = check_serving_health(
        ModelRegistry.from_settings(settings()), metrics_urls, threshold, min_predictions,
        work_dir,
    )  # fmt: skip
    logger = get_run_logger()
    if check.report.traffic is None:
        logger.warning("health report: %s", check.report.headline)
    else:
        logger.info("health report: %s", check.report.headline)
    return check


@task(name="publish_health_report", timeout_seconds=120)
def publish_health_report_task(check: HealthCheck) -> None:
    """The report as a table artifact and its chart as an image artifact; drift as an event."""
    create_table_artifact(
        table=check.report.table(), key=REPORT_KEY, description=check.report.headline
    )
    create_image_artifact(
        image_url=check.chart_url, key=CHART_KEY,
        description="Predicted emotions week over week, refusals by reason, latency",
    )  # fmt: skip
    if check.report.drift.flagged:
        events.serving_drift(check.report)
