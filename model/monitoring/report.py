"""The daily health report: how the served model did since the last report, and drift.

Pure: readings, earlier reports and the champion go in; the report, and what to keep of it for
the next one, come out (:mod:`model.monitoring.history` stores them, the ``health`` flow
publishes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from model.contract import CLASSES
from model.monitoring.readings import (
    Counts,
    Reading,
    Unreachable,
    add_counts,
    by_label,
    new_counts,
    quantile,
    total,
)

WEEK = timedelta(days=7)
#: What the report says when no replica answered.
NO_METRICS = "no serving metrics reachable"


@dataclass(frozen=True)
class Traffic:
    """What the replicas served in the report's window, summed.

    Attributes:
        analyses: photos analysed (the page's and the API's).
        predictions: faces classified, per predicted emotion.
        mean_confidence: mean probability of each face's predicted emotion.
        faces_per_analysis: mean faces found per analysed photo.
        refusals: requests refused or failed, per reason (``not_an_image``, ``overloaded``...).
        latency_ms: p50 and p95 in milliseconds, of the API's predict requests
            (``predict``) and of every analysis (``analysis``); None without observations.
    """

    analyses: int
    predictions: dict[str, int]
    mean_confidence: float | None
    faces_per_analysis: float | None
    refusals: dict[str, int]
    latency_ms: dict[str, tuple[float | None, float | None]]

    @property
    def requests(self) -> int:
        """Analyses answered plus requests refused."""
        return self.analyses + sum(self.refusals.values())

    def refusal_rate(self, reason: str) -> float:
        """The share of requests refused for ``reason``."""
        return self.refusals[reason] / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Shift:
    """One emotion's share of the predictions, this week against the week before."""

    emotion: str
    this_week: float
    last_week: float
    flagged: bool

    @property
    def change(self) -> float:
        """This week's share minus last week's (0.12: twelve points more)."""
        return self.this_week - self.last_week


@dataclass(frozen=True)
class Champion:
    """The champion in the store, and how old it is."""

    version: str
    promoted_at: datetime
    test_accuracy: float | None

    def age_days(self, now: datetime) -> float:
        """Days since it was promoted."""
        return (now - self.promoted_at).total_seconds() / 86400


@dataclass(frozen=True)
class Snapshot:
    """What a report keeps for the next ones: each replica's reading, the window's predictions.

    Attributes:
        time: when the report was made.
        readings: the replicas read, by ``/metrics`` address.
        predictions: faces classified in the report's window, per emotion.
    """

    time: datetime
    readings: dict[str, Reading]
    predictions: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """The snapshot as stored."""
        return {
            "time": self.time.isoformat(),
            "readings": [reading.to_json() for reading in self.readings.values()],
            "predictions": self.predictions,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        """Read a stored snapshot back."""
        readings = [Reading.from_json(item) for item in data["readings"]]
        return cls(
            datetime.fromisoformat(data["time"]),
            {reading.url: reading for reading in readings},
            {name: int(count) for name, count in data["predictions"].items()},
        )


@dataclass(frozen=True)
class DriftCheck:
    """Week-over-week shares, or why they were not compared."""

    shifts: tuple[Shift, ...] = ()
    threshold: float = 0.0
    skipped: str | None = None

    @property
    def flagged(self) -> tuple[Shift, ...]:
        """The emotions whose share moved more than the threshold."""
        return tuple(shift for shift in self.shifts if shift.flagged)


@dataclass(frozen=True)
class HealthReport:
    """The report: window, traffic, errors, latency, drift, and the champion's age.

    Attributes:
        time: when it was made.
        since: start of its window (the earliest replica's; None when none answered).
        readings: the replicas that answered.
        unreachable: those that did not, with the reason.
        traffic: what they served in the window (None when none answered).
        drift: the week-over-week comparison of predicted emotions.
        champion: the store's champion (None before the first promotion).
        served_versions: the model versions the replicas served when read.
    """

    time: datetime
    since: datetime | None
    readings: tuple[Reading, ...]
    unreachable: tuple[Unreachable, ...]
    traffic: Traffic | None
    drift: DriftCheck
    champion: Champion | None
    served_versions: tuple[str, ...] = ()

    @property
    def headline(self) -> str:
        """One line: the window's traffic and any drift, or that no replica answered."""
        champion = self._champion_text()
        if self.traffic is None:
            reasons = "; ".join(f"{item.url}: {item.reason}" for item in self.unreachable)
            return f"{NO_METRICS} ({reasons or 'no /metrics address configured'}); {champion}"
        drift = ", ".join(
            f"{shift.emotion} {shift.last_week:.0%} -> {shift.this_week:.0%}"
            for shift in self.drift.flagged
        )
        refused = self.traffic.requests - self.traffic.analyses
        return (
            f"{self.traffic.analyses} photos analysed, {refused} refused, from "
            f"{len(self.readings)} replica(s); "
            f"{'possible drift: ' + drift if drift else 'no drift flagged'}; {champion}"
        )

    def _champion_text(self) -> str:
        if self.champion is None:
            return "no champion promoted yet"
        return (
            f"champion {self.champion.version} promoted "
            f"{self.champion.age_days(self.time):.1f} days ago"
        )

    def table(self) -> list[dict[str, str]]:
        """The report as rows of measure, value and note, for a table artifact."""
        rows = [
            _row("report time", f"{self.time:%Y-%m-%d %H:%M} UTC"),
            _row("window since", f"{self.since:%Y-%m-%d %H:%M} UTC" if self.since else "-"),
            _row("replicas answering", f"{len(self.readings)} of "
                 f"{len(self.readings) + len(self.unreachable)}",
                 "; ".join(f"{u.url}: {u.reason}" for u in self.unreachable)),
        ]  # fmt: skip
        rows += self._champion_rows()
        if self.traffic is None:
            rows.append(_row("serving metrics", NO_METRICS, "check the replicas and the URLs"))
            return rows
        rows += _traffic_rows(self.traffic)
        rows += _drift_rows(self.traffic, self.drift)
        return rows

    def _champion_rows(self) -> list[dict[str, str]]:
        if self.champion is None:
            return [_row("champion", "none promoted yet")]
        accuracy = self.champion.test_accuracy
        served = ", ".join(self.served_versions) or "-"
        note = "" if set(self.served_versions) <= {self.champion.version} else (
            f"replicas serve {served}: not all on the champion yet"
        )  # fmt: skip
        return [
            _row("champion", self.champion.version, note),
            _row("champion age", f"{self.champion.age_days(self.time):.1f} days",
                 f"promoted {self.champion.promoted_at:%Y-%m-%d %H:%M} UTC"),
            _row("champion test accuracy", "-" if accuracy is None else f"{accuracy:.1%}"),
        ]  # fmt: skip


def _row(measure: str, value: str, note: str = "") -> dict[str, str]:
    return {"measure": measure, "value": value, "note": note}


def _milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _traffic_rows(traffic: Traffic) -> list[dict[str, str]]:
    rows = [
        _row("photos analysed", str(traffic.analyses)),
        _row("requests refused", str(traffic.requests - traffic.analyses)),
        _row("faces per photo", _fraction(traffic.faces_per_analysis, "{:.2f}")),
        _row("mean top-class confidence", _fraction(traffic.mean_confidence, "{:.1%}")),
    ]
    for name, (p50, p95) in traffic.latency_ms.items():
        rows.append(_row(f"{name} latency p50 / p95",
                         f"{_milliseconds(p50)} / {_milliseconds(p95)}"))  # fmt: skip
    for reason, count in sorted(traffic.refusals.items(), key=lambda item: -item[1]):
        rows.append(_row(f"refused: {reason}", f"{traffic.refusal_rate(reason):.1%}",
                         f"{count} of {traffic.requests} requests"))  # fmt: skip
    return rows


def _drift_rows(traffic: Traffic, drift: DriftCheck) -> list[dict[str, str]]:
    """A row per emotion: its count in the window, and its weekly shares when compared."""
    rows = [_row("drift", "not compared", drift.skipped)] if drift.skipped else []
    shifts = {shift.emotion: shift for shift in drift.shifts}
    for emotion in CLASSES:
        shift = shifts.get(emotion)
        note = ""
        if shift is not None:
            note = (f"share of the week {shift.last_week:.1%} -> {shift.this_week:.1%} "
                    f"({100 * shift.change:+.1f} points)")  # fmt: skip
            if shift.flagged:
                note += f": POSSIBLE DRIFT (moved more than {100 * drift.threshold:.0f} points)"
        rows.append(_row(f"predicted {emotion}", str(traffic.predictions.get(emotion, 0)), note))
    return rows


def _fraction(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


def traffic_of(counts: Counts) -> Traffic:
    """The report's traffic figures from the window's summed counts."""
    analyses = int(total(counts, "fer_faces_per_request_count"))
    faces = total(counts, "fer_faces_per_request_sum")
    confidence = total(counts, "fer_top_probability_count")
    refusals = by_label(counts, "fer_errors_total", "reason")
    predictions = by_label(counts, "fer_predictions_total", "emotion")
    confidence_sum = total(counts, "fer_top_probability_sum")
    latency = {
        "predict": _percentiles(counts, "fer_request_seconds", endpoint="predict"),
        "analysis": _percentiles(counts, "fer_analysis_seconds"),
    }
    return Traffic(
        analyses=analyses,
        predictions={name: int(count) for name, count in predictions.items()},
        mean_confidence=confidence_sum / confidence if confidence else None,
        faces_per_analysis=faces / analyses if analyses else None,
        refusals={reason: int(count) for reason, count in refusals.items() if count},
        latency_ms=latency,
    )  # fmt: skip


def _percentiles(counts: Counts, name: str, **labels: str) -> tuple[float | None, float | None]:
    found = (quantile(counts, name, q, **labels) for q in (0.5, 0.95))
    return tuple(None if value is None else 1000 * value for value in found)  # type: ignore[return-value]


def week_over_week(
    this_week: dict[str, int], last_week: dict[str, int], threshold: float, min_predictions: int
) -> DriftCheck:
    """Compare each emotion's share of the predictions with the week before.

    Args:
        this_week: predictions per emotion in the last seven days.
        last_week: those of the seven days before.
        threshold: a share moving more than this (0.10: ten points) is flagged.
        min_predictions: weeks with fewer predictions are not compared (shares of a handful of
            faces move by chance).

    Returns:
        The shifts, or why there are none.
    """
    now_total, before_total = sum(this_week.values()), sum(last_week.values())
    if min(now_total, before_total) < min_predictions:
        return DriftCheck(
            threshold=threshold,
            skipped=f"too few predictions to compare: {now_total} this week, {before_total} the "
            f"week before; at least {min_predictions} each are needed",
        )
    shifts = []
    for emotion in CLASSES:
        now = this_week.get(emotion, 0) / now_total
        before = last_week.get(emotion, 0) / before_total
        shifts.append(Shift(emotion, now, before, abs(now - before) > threshold))
    return DriftCheck(tuple(shifts), threshold)


def _summed_predictions(snapshots: list[Snapshot]) -> dict[str, int]:
    found: dict[str, int] = {}
    for snapshot in snapshots:
        for emotion, count in snapshot.predictions.items():
            found[emotion] = found.get(emotion, 0) + count
    return found


def _last_reading_of(url: str, history: list[Snapshot]) -> tuple[Reading, datetime] | None:
    """A replica's newest earlier reading, and when it was taken."""
    for snapshot in sorted(history, key=lambda item: item.time, reverse=True):
        if url in snapshot.readings:
            return snapshot.readings[url], snapshot.time
    return None


def build_report(
    now: datetime,
    answers: list[Reading | Unreachable],
    history: list[Snapshot],
    champion: Champion | None,
    threshold: float,
    min_predictions: int,
) -> tuple[HealthReport, Snapshot | None]:
    """The report for the replicas' answers, and the snapshot to keep for the next one.

    Args:
        now: the report's time (UTC).
        answers: each ``/metrics`` address's reading, or why it gave none.
        history: earlier snapshots (the last two weeks are enough).
        champion: the store's champion.
        threshold: the drift threshold (see :func:`week_over_week`).
        min_predictions: the fewest predictions per week worth comparing.

    Returns:
        The report, and the snapshot (None when no replica answered: nothing to keep).
    """
    readings = _distinct([item for item in answers if isinstance(item, Reading)])
    unreachable = tuple(item for item in answers if isinstance(item, Unreachable))
    versions = tuple(sorted({version for reading in readings for version in reading.versions}))
    if not readings:
        report = HealthReport(now, None, (), unreachable, None, DriftCheck(), champion, versions)
        return report, None
    parts, starts = [], []
    for reading in readings:
        earlier = _last_reading_of(reading.url, history)
        counts, continued = new_counts(reading, earlier[0] if earlier else None)
        parts.append(counts)
        starts.append(earlier[1] if continued and earlier else _utc(reading.started))
    traffic = traffic_of(add_counts(parts))
    this_week = [item for item in history if now - WEEK < item.time <= now]
    last_week = [item for item in history if now - 2 * WEEK < item.time <= now - WEEK]
    drift = week_over_week(
        _summed_predictions([*this_week, Snapshot(now, {}, traffic.predictions)]),
        _summed_predictions(last_week),
        threshold,
        min_predictions,
    )
    report = HealthReport(
        now, min(starts), tuple(readings), unreachable, traffic, drift, champion, versions
    )
    snapshot = Snapshot(now, {reading.url: reading for reading in readings}, traffic.predictions)
    return report, snapshot


def _distinct(readings: list[Reading]) -> list[Reading]:
    """One reading per process: an address listed twice, or two names of one replica."""
    seen: set[float] = set()
    kept = []
    for reading in readings:
        if reading.started not in seen:
            seen.add(reading.started)
            kept.append(reading)
    return kept


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
