"""Reading the serving app's ``/metrics``: what each replica has counted, and what is new.

Prometheus counters grow from the process's start. A report about a day needs the counts added
since the last report, per replica: the difference between two readings of the same process,
or everything since the start when the process restarted in between (its start time, or any
count going down, tells).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

logger = logging.getLogger(__name__)

#: The samples that only grow while a process lives (counters and histograms).
CUMULATIVE_SUFFIXES = ("_total", "_bucket", "_sum", "_count")
#: Gauges the app exports (serving/metrics.py): its start, and the version it serves.
STARTED = "fer_started_time_seconds"
MODEL_INFO = "fer_model_info"

#: A sample's labels, sorted, so that equal series compare equal.
Labels = tuple[tuple[str, str], ...]
#: A sample's name and labels.
SeriesKey = tuple[str, Labels]
#: Counts by series.
Counts = dict[SeriesKey, float]


@dataclass(frozen=True)
class Reading:
    """One replica's metrics at one moment.

    Attributes:
        url: the ``/metrics`` address read.
        started: when the process started counting (Unix time).
        versions: the model version(s) it served when read.
        counts: its counters and histogram samples, cumulative since ``started``.
    """

    url: str
    started: float
    versions: tuple[str, ...]
    counts: Counts

    def to_json(self) -> dict[str, Any]:
        """The reading as stored with a report (see :mod:`model.monitoring.history`)."""
        return {
            "url": self.url,
            "started": self.started,
            "versions": list(self.versions),
            "counts": [[name, [list(pair) for pair in labels], value]
                       for (name, labels), value in sorted(self.counts.items())],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reading:
        """Read a stored reading back."""
        counts = {
            (name, tuple((key, value) for key, value in labels)): float(count)
            for name, labels, count in data["counts"]
        }
        return cls(data["url"], float(data["started"]), tuple(data["versions"]), counts)


@dataclass(frozen=True)
class Unreachable:
    """A ``/metrics`` address that gave no reading, and why."""

    url: str
    reason: str


def parse_metrics(url: str, text: str) -> Reading:
    """The FER app's samples in a Prometheus text exposition.

    Args:
        url: where the text came from.
        text: the exposition.

    Returns:
        Its reading.

    Raises:
        ValueError: if the text is not Prometheus's format, or holds no FER app metrics.
    """
    counts: Counts = {}
    started: float | None = None
    versions: list[str] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == STARTED:
                started = sample.value
            elif sample.name == MODEL_INFO and sample.value:
                versions.append(sample.labels["version"])
            elif sample.name.startswith("fer_") and sample.name.endswith(CUMULATIVE_SUFFIXES):
                counts[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    if started is None:
        raise ValueError(f"no {STARTED} sample: it is not the FER serving app's /metrics")
    return Reading(url, started, tuple(versions), counts)


def replica_urls(url: str) -> list[str]:
    """The address of each replica behind ``url``, one per IPv4 address its host resolves to.

    A Kubernetes headless Service resolves to every ready pod, so one address names them
    all; a load-balanced address would give a different replica at each reading. A host that
    resolves to one address (or does not resolve: reading it says why) stays as given.

    Args:
        url: a ``/metrics`` address.

    Returns:
        The addresses to read.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if host is None or _is_ip_literal(host):
        return [url]
    try:
        found = socket.getaddrinfo(host, parts.port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return [url]
    addresses = sorted({str(info[4][0]) for info in found})
    if len(addresses) <= 1:
        return [url]
    port = f":{parts.port}" if parts.port else ""
    return [urlunsplit(parts._replace(netloc=f"{address}{port}")) for address in addresses]


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def read_metrics(url: str, timeout: float = 10.0) -> Reading | Unreachable:
    """Read one replica's ``/metrics``.

    Args:
        url: its address, e.g. ``http://127.0.0.1:7860/metrics``.
        timeout: seconds to wait for the answer.

    Returns:
        The reading, or why there is none (never raises for a replica that is down).
    """
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as error:
        reason = f"{type(error).__name__}: {error}".rstrip(": ")
        logger.warning("no serving metrics from %s: %s", url, reason)
        return Unreachable(url, reason)
    try:
        return parse_metrics(url, response.text)
    except ValueError as error:
        logger.warning("no serving metrics from %s: %s", url, error)
        return Unreachable(url, str(error))


def new_counts(current: Reading, previous: Reading | None) -> tuple[Counts, bool]:
    """What a replica counted since an earlier reading of it.

    Args:
        current: the reading now.
        previous: the same address's last reading, if any.

    Returns:
        The counts added, and whether they run from ``previous`` (False: from the process's
        start, because there was no earlier reading or the process restarted since).
    """
    if previous is None or previous.started != current.started:
        return dict(current.counts), False
    added = {key: value - previous.counts.get(key, 0.0) for key, value in current.counts.items()}
    if any(value < 0 for value in added.values()):  # counters went down: a restart after all
        return dict(current.counts), False
    return added, True


def add_counts(parts: list[Counts]) -> Counts:
    """The replicas' counts summed, series by series."""
    total: Counts = {}
    for counts in parts:
        for key, value in counts.items():
            total[key] = total.get(key, 0.0) + value
    return total


def total(counts: Counts, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, pairs), value in counts.items()
               if sample == name and wanted <= set(pairs))  # fmt: skip


def by_label(counts: Counts, name: str, label: str, **labels: str) -> dict[str, float]:
    """The samples called ``name`` (whose labels include ``labels``) summed per ``label``."""
    wanted = set(labels.items())
    found: dict[str, float] = {}
    for (sample, pairs), value in counts.items():
        keyed = dict(pairs)
        if sample == name and label in keyed and wanted <= set(pairs):
            found[keyed[label]] = found.get(keyed[label], 0.0) + value
    return found


def quantile(counts: Counts, name: str, q: float, **labels: str) -> float | None:
    """A quantile of a histogram's observations, as Prometheus's ``histogram_quantile``.

    Interpolates linearly inside the bucket the quantile falls in; the top finite bound
    when it falls in ``+Inf``.

    Args:
        counts: histogram samples (``<name>_bucket`` with ``le``).
        name: the histogram, without ``_bucket``.
        q: the quantile, 0 to 1.
        labels: the series (other labels are summed over).

    Returns:
        The quantile in the histogram's unit, or None without observations.
    """
    cumulative = sorted(
        (float(bound), count)
        for bound, count in by_label(counts, f"{name}_bucket", "le", **labels).items()
    )
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            share = (rank - lower_count) / (count - lower_count)
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound
