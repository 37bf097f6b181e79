"""The app's Prometheus metrics: what ``/metrics`` shows, and what the daily health report reads.

Requests, refusals by reason and latency per endpoint; per analysis (the page's and the API's
alike) the faces found, the emotion predicted for each, the top-class probability and the
time taken; the served version, when the process started (so a reader can tell a restart from
a quiet day) and how long ago the store last answered.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.faces import Analysis

if TYPE_CHECKING:
    from serving.app import ChampionWatcher

#: Seconds: fine enough below 100 ms for a p50/p95 read from the buckets to mean something.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)
FACE_BUCKETS = (0, 1, 2, 3, 5, 10, 20)
PROBABILITY_BUCKETS = tuple(round(0.1 * step, 1) for step in range(2, 11))


class ServingMetrics:
    """The app's metrics, in a registry of their own.

    Args:
        watcher: read at each scrape for the served version and the store's last answer.
    """

    def __init__(self, watcher: ChampionWatcher) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "fer_requests", "Requests answered.", ["endpoint", "status"], registry=registry
        )
        self.errors = Counter(
            "fer_errors", "Requests refused or failed, by reason.", ["endpoint", "reason"],
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "fer_request_seconds", "Time to answer.", ["endpoint"], buckets=LATENCY_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.analysis = Histogram(
            "fer_analysis_seconds", "Time to load a photo, find its faces and classify them.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.faces = Histogram(
            "fer_faces_per_request", "Faces found per analysed photo.", buckets=FACE_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.predictions = Counter(
            "fer_predictions", "Faces classified, by predicted emotion.", ["emotion"],
            registry=registry,
        )  # fmt: skip
        self.top_probability = Histogram(
            "fer_top_probability", "Probability of each face's predicted emotion.",
            buckets=PROBABILITY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.model = Gauge(
            "fer_model_info", "The served model version (value 1).", ["version"],
            registry=registry,
        )  # fmt: skip
        Gauge(
            "fer_started_time_seconds", "When this process started counting (Unix time).",
            registry=registry,
        ).set(time.time())  # fmt: skip
        Gauge(
            "fer_store_last_answer_age_seconds",
            "Seconds since the model store last answered the champion poll (-1: never).",
            registry=registry,
        ).set_function(lambda: time.time() - watcher.last_checked if watcher.last_checked else -1)
        self._watcher = watcher

    def analysed(self, analysis: Analysis, seconds: float) -> None:
        """Count one answered analysis: its faces, their emotions and confidence, its time."""
        self.analysis.observe(seconds)
        self.faces.observe(len(analysis.faces))
        for face in analysis.faces:
            self.predictions.labels(face.label).inc()
            self.top_probability.observe(face.probabilities[face.label])

    def refused(self, endpoint: str, reason: str) -> None:
        """Count one request refused (or failed) for ``reason``."""
        self.errors.labels(endpoint, reason).inc()

    def render(self) -> bytes:
        """The metrics in Prometheus's text format, with the version served now."""
        self.model.clear()
        served = self._watcher.served
        if served is not None:
            self.model.labels(served.predictor.version).set(1)
        return generate_latest(self.registry)
