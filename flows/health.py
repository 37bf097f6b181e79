"""The ``health`` flow: a daily report on the served model, from its replicas' metrics."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow

from model.settings import get_settings
from tasks.health import check_serving_health_task, publish_health_report_task


@flow(name="health")
def daily(
    metrics_urls: list[str] | None = None,
    drift_share: float | None = None,
    min_predictions: int = 100,
) -> str:
    """Report how the served model did since the last report, and flag drift.

    Reads each replica's /metrics and the store's champion; publishes a table and a chart
    (predictions per emotion, confidence, faces per photo, refusals by reason, p50/p95
    latency, the champion's age) and emits fer.serving.drift when an emotion's share moved.

    Args:
        metrics_urls: The serving replicas' /metrics addresses. Empty: the
            FER_HEALTH_METRICS_URLS setting (default: the local app).
        drift_share: How far an emotion's share of the predictions may move week over week
            before it is flagged (0.10: ten points). Empty: FER_HEALTH_DRIFT_SHARE.
        min_predictions: Weeks with fewer predictions than this are not compared.

    Returns:
        The report's headline.
    """
    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="fer-health-") as work_dir:
        check = check_serving_health_task(
            metrics_urls or settings.metrics_urls,
            drift_share or settings.health_drift_share,
            min_predictions,
            Path(work_dir),
        )
        publish_health_report_task(check)
    return check.report.headline
