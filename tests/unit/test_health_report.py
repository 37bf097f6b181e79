"""The daily health report's arithmetic: readings of the app's own metrics, windows, drift."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from model.monitoring.chart import draw_report
from model.monitoring.readings import Reading, Unreachable, new_counts, parse_metrics, quantile
from model.monitoring.report import (
    NO_METRICS,
    WEEK,
    Champion,
    Snapshot,
    build_report,
    week_over_week,
)
from serving.faces import Analysis, FaceResult
from serving.metrics import ServingMetrics

pytestmark = pytest.mark.unit

URL = "http://replica-a:7860/metrics"
NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


@dataclass
class _NoModel:
    """What ServingMetrics reads of a watcher: nothing served, the store never asked."""

    served: None = None
    last_checked: float = 0.0


def _face(label: str, probability: float) -> FaceResult:
    rest = (1 - probability) / 6
    names = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    return FaceResult((0, 0, 48, 48), {n: probability if n == label else rest for n in names})


def _analysis(*faces: FaceResult) -> Analysis:
    return Analysis(tuple(faces), False, (), "v1", (640, 480))


def _served_metrics() -> ServingMetrics:
    metrics = ServingMetrics(_NoModel())  # type: ignore[arg-type]
    metrics.analysed(_analysis(_face("happy", 0.9), _face("sad", 0.5)), 0.040)
    metrics.analysed(_analysis(_face("happy", 0.7)), 0.020)
    metrics.analysed(_analysis(), 0.010)
    metrics.refused("predict", "not_an_image")
    for seconds in (0.012, 0.025, 0.028, 0.060):
        metrics.latency.labels("predict").observe(seconds)
    return metrics


def test_the_apps_own_metrics_read_back_as_the_reports_figures() -> None:
    reading = parse_metrics(URL, _served_metrics().render().decode())
    report, snapshot = build_report(NOW, [reading], [], None, 0.1, 100)

    traffic = report.traffic
    assert traffic is not None and snapshot is not None
    assert traffic.analyses == 3 and traffic.requests == 4
    assert traffic.predictions == {"happy": 2, "sad": 1}
    assert traffic.mean_confidence == pytest.approx((0.9 + 0.5 + 0.7) / 3)
    assert traffic.faces_per_analysis == pytest.approx(1.0)
    assert traffic.refusals == {"not_an_image": 1}
    assert traffic.refusal_rate("not_an_image") == pytest.approx(0.25)
    # Two of four requests at or below 25 ms: the median is that bucket's upper bound.
    assert traffic.latency_ms["predict"][0] == pytest.approx(25.0)
    assert 50 < traffic.latency_ms["predict"][1] <= 75  # type: ignore[operator]
    # A first reading counts from the process's start.
    assert report.since == datetime.fromtimestamp(reading.started, UTC)
    assert snapshot.predictions == {"happy": 2, "sad": 1}
    rows = {row["measure"]: row for row in report.table()}
    assert rows["refused: not_an_image"]["value"] == "25.0%"
    assert rows["predicted happy"]["value"] == "2"
    assert "too few predictions" in rows["drift"]["note"]


def test_a_second_reading_counts_only_what_is_new_and_a_restart_everything() -> None:
    key = ("fer_predictions_total", (("emotion", "happy"),))
    before = Reading(URL, 1000.0, ("v1",), {key: 5.0})
    later = Reading(URL, 1000.0, ("v1",), {key: 8.0})
    assert new_counts(later, before) == ({key: 3.0}, True)
    assert new_counts(later, None) == ({key: 8.0}, False)
    restarted = Reading(URL, 2000.0, ("v1",), {key: 2.0})
    assert new_counts(restarted, before) == ({key: 2.0}, False)
    # Counts going down with the same start time are a restart too (a reused timestamp).
    assert new_counts(Reading(URL, 1000.0, ("v1",), {key: 1.0}), before)[1] is False

    earlier = Snapshot(NOW - timedelta(days=1), {URL: before}, {"happy": 5})
    report, _ = build_report(NOW, [later], [earlier], None, 0.1, 100)
    assert report.traffic is not None and report.traffic.predictions == {"happy": 3}
    assert report.since == earlier.time


def test_quantiles_interpolate_inside_the_bucket_as_prometheus_does() -> None:
    buckets = {("h_bucket", (("le", le),)): count
               for le, count in (("0.1", 2.0), ("0.2", 6.0), ("+Inf", 8.0))}  # fmt: skip
    assert quantile(buckets, "h", 0.5) == pytest.approx(0.1 + 0.1 * (4 - 2) / (6 - 2))
    assert quantile(buckets, "h", 0.95) == pytest.approx(0.2)  # in +Inf: the top bound
    assert quantile({}, "h", 0.5) is None


def test_a_share_moving_more_than_the_threshold_is_flagged() -> None:
    drift = week_over_week({"happy": 60, "sad": 40}, {"happy": 45, "sad": 55}, 0.10, 50)
    assert [shift.emotion for shift in drift.flagged] == ["happy", "sad"]
    happy = drift.flagged[0]
    assert (happy.last_week, happy.this_week) == (pytest.approx(0.45), pytest.approx(0.60))
    assert not week_over_week({"happy": 52, "sad": 48}, {"happy": 45, "sad": 55}, 0.1, 50).flagged
    assert week_over_week({"happy": 60}, {"happy": 10}, 0.1, 50).skipped


def test_the_weeks_compared_are_the_last_seven_days_against_the_seven_before() -> None:
    key = ("fer_predictions_total", (("emotion", "sad"),))
    reading = Reading(URL, 1000.0, (), {key: 30.0})
    history = [
        Snapshot(NOW - timedelta(days=2), {}, {"sad": 70}),  # this week
        Snapshot(NOW - WEEK - timedelta(days=1), {}, {"happy": 100}),  # the week before
        Snapshot(NOW - 3 * WEEK, {}, {"sad": 1000}),  # too old to count
    ]
    report, _ = build_report(NOW, [reading], history, None, 0.1, 100)
    flagged = {shift.emotion: shift for shift in report.drift.flagged}
    assert set(flagged) == {"happy", "sad"}
    assert flagged["sad"].this_week == pytest.approx(1.0)
    assert flagged["happy"].last_week == pytest.approx(1.0)
    assert "possible drift" in report.headline


def test_no_replica_answering_is_a_clear_report_and_keeps_no_snapshot(tmp_path: Path) -> None:
    champion = Champion("20261120T020000Z-abc", NOW - timedelta(days=11), 0.66)
    down = Unreachable(URL, "ConnectError: connection refused")
    report, snapshot = build_report(NOW, [down], [], champion, 0.1, 100)
    assert snapshot is None and report.traffic is None
    assert report.headline.startswith(NO_METRICS)
    assert URL in report.headline and "11.0 days" in report.headline
    rows = {row["measure"]: row for row in report.table()}
    assert rows["serving metrics"]["value"] == NO_METRICS
    assert rows["champion age"]["value"] == "11.0 days"
    chart = draw_report(report, tmp_path / "down.png")
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_the_chart_is_drawn_from_a_report_with_traffic(tmp_path: Path) -> None:
    reading = parse_metrics(URL, _served_metrics().render().decode())
    history = [Snapshot(NOW - WEEK - timedelta(hours=1), {}, {"happy": 1})]
    report, _ = build_report(NOW, [reading], history, None, 0.1, 1)
    assert report.drift.shifts  # compared, so the chart has both weeks
    chart = draw_report(report, tmp_path / "report.png")
    assert chart.read_bytes().startswith(b"\x89PNG") and chart.stat().st_size > 10_000


def test_a_page_that_is_not_the_apps_metrics_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="not the FER serving app"):
        parse_metrics(URL, "# TYPE up gauge\nup 1\n")


def test_a_name_with_several_addresses_is_read_at_each_replica(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from model.monitoring.readings import replica_urls

    # What a headless Service's DNS answers: one A record per ready pod.
    pods = {"fer-serve-pods": ["10.0.0.7", "10.0.0.5", "10.0.0.7"]}

    def resolve(host: str, port: object, *args: object) -> list[tuple[object, ...]]:
        if host not in pods:
            raise socket.gaierror(f"unknown host {host}")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in pods[host]]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    assert replica_urls("http://fer-serve-pods:7860/metrics") == [
        "http://10.0.0.5:7860/metrics",
        "http://10.0.0.7:7860/metrics",
    ]
    pods["fer-serve"] = ["10.1.0.1"]  # one address: kept as written
    assert replica_urls("http://fer-serve:7860/metrics") == ["http://fer-serve:7860/metrics"]
    assert replica_urls("http://127.0.0.1:7860/metrics") == ["http://127.0.0.1:7860/metrics"]
    # A name that does not resolve stays, so that reading it reports the reason.
    assert replica_urls("http://nowhere:7860/metrics") == ["http://nowhere:7860/metrics"]


def test_one_replica_reached_by_two_addresses_is_counted_once() -> None:
    text = _served_metrics().render().decode()
    twice = [parse_metrics(URL, text), parse_metrics("http://127.0.0.1:7860/metrics", text)]
    report, snapshot = build_report(NOW, twice, [], None, 0.1, 100)
    assert report.traffic is not None and report.traffic.analyses == 3
    assert snapshot is not None and list(snapshot.readings) == [URL]
