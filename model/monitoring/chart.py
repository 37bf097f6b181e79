"""The health report as a picture: emotions week over week, refusals, latency."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from model.contract import CLASSES
from model.monitoring.report import NO_METRICS, HealthReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def draw_report(report: HealthReport, path: Path) -> Path:
    """Write the report's chart as a PNG.

    Three panels: each emotion's share of the predictions in the last seven days and the seven
    before (flagged emotions in red; the report's window alone when the weeks were not
    compared), the share of requests refused per reason, and the p50/p95
    latencies. Without traffic, one panel says that no replica answered.

    Args:
        report: the report.
        path: where to write the PNG.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    if report.traffic is None:
        figure = Figure(figsize=(8, 2))
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, f"{NO_METRICS}\n{report.headline}", ha="center", va="center",
                  wrap=True, fontsize=10)  # fmt: skip
        figure.savefig(path, dpi=100)
        return path
    figure = Figure(figsize=(14, 4.5))
    shares, refusals, latency = figure.subplots(1, 3, width_ratios=(3, 2, 2))
    _draw_shares(shares, report)
    _draw_refusals(refusals, report)
    _draw_latency(latency, report)
    figure.suptitle(f"FER serving health, {report.time:%Y-%m-%d %H:%M} UTC")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _draw_shares(axes: Axes, report: HealthReport) -> None:
    """Each emotion's share: last seven days against the seven before, or the window alone."""
    import numpy as np

    traffic = report.traffic
    assert traffic is not None
    positions = np.arange(len(CLASSES))
    shifts = {shift.emotion: shift for shift in report.drift.shifts}
    if shifts:
        axes.bar(positions - 0.2, [shifts[name].last_week for name in CLASSES], 0.4,
                 color="tab:gray", label="7 days before")  # fmt: skip
        axes.bar(positions + 0.2, [shifts[name].this_week for name in CLASSES], 0.4,
                 label="last 7 days")  # fmt: skip
    else:
        total = max(sum(traffic.predictions.values()), 1)
        window = [traffic.predictions.get(name, 0) / total for name in CLASSES]
        axes.bar(positions, window, 0.6, label="since the last report")
    axes.set_xticks(positions, CLASSES, rotation=30)
    for tick, name in zip(axes.get_xticklabels(), CLASSES, strict=True):
        if name in shifts and shifts[name].flagged:
            tick.set_color("tab:red")
            tick.set_fontweight("bold")
    axes.set_ylabel("share of faces")
    flagged = ", ".join(shift.emotion for shift in report.drift.flagged)
    axes.set_title(f"predicted emotions{'; possible drift: ' + flagged if flagged else ''}")
    axes.legend()


def _draw_refusals(axes: Axes, report: HealthReport) -> None:
    from matplotlib.ticker import PercentFormatter

    traffic = report.traffic
    assert traffic is not None
    reasons = sorted(traffic.refusals) or ["none"]
    rates = [traffic.refusal_rate(reason) if reason in traffic.refusals else 0.0
             for reason in reasons]  # fmt: skip
    axes.barh(reasons, rates, color="tab:orange")
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_xlabel(f"share of {traffic.requests} requests")
    axes.set_title("refused, by reason")


def _draw_latency(axes: Axes, report: HealthReport) -> None:
    traffic = report.traffic
    assert traffic is not None
    names = list(traffic.latency_ms)
    for offset, (index, label) in zip((-0.2, 0.2), enumerate(("p50", "p95")), strict=True):
        values = [traffic.latency_ms[name][index] or 0.0 for name in names]
        axes.bar([i + offset for i in range(len(names))], values, 0.4, label=label)
    axes.set_xticks(range(len(names)), names)
    axes.set_ylabel("ms")
    axes.set_title("latency")
    axes.legend()
