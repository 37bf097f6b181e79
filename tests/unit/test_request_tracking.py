"""The API's request tracking: headers on every answer, counted before the answer is complete."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from serving.api import TrackRequests
from serving.app import ChampionWatcher
from serving.metrics import ServingMetrics

pytestmark = pytest.mark.unit


def _count(metrics: ServingMetrics, endpoint: str, status: str) -> float:
    value = metrics.registry.get_sample_value(
        "fer_requests_total", {"endpoint": endpoint, "status": status}
    )
    return value or 0.0


def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """Run one request through ``app``; the messages it sent, each with the count at sending."""
    scope = {"type": "http", "method": "GET", "path": path, "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append({**message, "counted": _count(app.metrics, "healthz", "200")})

    asyncio.run(app(scope, receive, send))
    return sent


async def _answer_in_two_parts(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'{"status":', "more_body": True})
    await send({"type": "http.response.body", "body": b'"ok"}'})


def test_a_request_is_named_and_counted_before_its_last_bytes_leave(tmp_path: Path) -> None:
    watcher = ChampionWatcher(None, tmp_path, poll_seconds=3600)
    app = TrackRequests(_answer_in_two_parts, watcher, ServingMetrics(watcher))

    start, first, last = _call(app, "/healthz", [(b"x-request-id", b"trace-7")])

    assert (b"x-request-id", b"trace-7") in start["headers"]
    # A caller that reads /metrics (or the log) once its answer is complete finds it there.
    assert first["counted"] == 0 and last["counted"] == 1
    assert _count(app.metrics, "healthz", "200") == 1  # once, not again when the app returns


def test_an_app_that_fails_before_answering_is_counted_as_a_500(tmp_path: Path) -> None:
    watcher = ChampionWatcher(None, tmp_path, poll_seconds=3600)

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    app = TrackRequests(broken, watcher, ServingMetrics(watcher))
    with pytest.raises(RuntimeError):
        _call(app, "/healthz", [])
    assert _count(app.metrics, "healthz", "500") == 1
