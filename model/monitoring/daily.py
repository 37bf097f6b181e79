"""The daily health check: read the replicas and the store, build the report, keep its records."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from model.monitoring.chart import draw_report
from model.monitoring.history import champion_of, load_snapshots, save_chart, save_snapshot
from model.monitoring.readings import read_metrics, replica_urls
from model.monitoring.report import WEEK, HealthReport, build_report
from model.registry.store import ModelRegistry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthCheck:
    """A finished check: the report, and where its chart is.

    Attributes:
        report: the report.
        chart: the PNG on this machine.
        chart_url: a link that shows the stored PNG (presigned, valid seven days).
    """

    report: HealthReport
    chart: Path
    chart_url: str


def check_serving_health(
    registry: ModelRegistry,
    metrics_urls: list[str],
    threshold: float,
    min_predictions: int,
    out_dir: Path,
    now: datetime | None = None,
) -> HealthCheck:
    """Read every replica's ``/metrics`` and the champion, and report since the last check.

    The snapshot is stored last, and only when a replica answered: a retried check counts
    the same window again, and a day without answers leaves the next report's window starting
    at the last real reading.

    Args:
        registry: the model store (champion, earlier snapshots; the new snapshot and chart).
        metrics_urls: the replicas' ``/metrics`` addresses (a name that resolves to several
            addresses, such as a headless Service, is read at each).
        threshold: an emotion whose share moves more than this week over week is flagged.
        min_predictions: the fewest predictions per week worth comparing.
        out_dir: where the chart is drawn.
        now: the report's time (default: now, UTC).

    Returns:
        The report and its chart.

    Raises:
        StoreUnavailable: the store did not answer (transient).
        RegistryError: any other store failure.
    """
    now = now or datetime.now(UTC)
    answers = [read_metrics(replica) for url in metrics_urls for replica in replica_urls(url)]
    # The two weeks compared, and a day more: a replica's last reading may be older than the
    # last report (a day when it did not answer).
    history = load_snapshots(registry, since=now - 2 * WEEK - timedelta(days=1))
    report, snapshot = build_report(
        now, answers, history, champion_of(registry), threshold, min_predictions
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = draw_report(report, out_dir / f"health-{now:%Y%m%dT%H%M%SZ}.png")
    key = save_chart(registry, chart, now)
    # Last: a retry after a failure above must not find this report's reading already kept.
    if snapshot is not None:
        logger.info("health snapshot kept at %s", save_snapshot(registry, snapshot))
    logger.info("health report: %s", report.headline)
    return HealthCheck(report, chart, registry.presigned_url(key))
