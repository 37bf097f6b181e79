"""Alerts: the automations `fer deploy` creates deliver a failed run's stage and reason."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flows import alerts
from flows.retrain import run_retrain
from infra.services import free_port
from model.errors import GateFailed
from model.evaluation.gate import GateConfig
from model.settings import Settings
from tests.integration.conftest import QUICK, SUBSET_QUALITY

pytestmark = pytest.mark.integration


class _Receiver(BaseHTTPRequestHandler):
    """Keeps every JSON body posted to it, as a chat service's webhook would."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on 127.0.0.1: its URL and the messages it got."""
    received: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()


@pytest.fixture
def alerting(services: Settings, webhook: tuple[str, list[dict[str, Any]]]) -> Iterator[Settings]:
    """The platform's settings with FER_ALERT_BLOCK naming a custom webhook block to it."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, _ = webhook
    with temporary_settings({PREFECT_API_URL: services.prefect_url}):
        CustomWebhookNotificationBlock(
            name="fer-test", url=url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
        ).save("fer-alerts-test", overwrite=True)
    yield services.model_copy(update={"alert_block": "custom-webhook/fer-alerts-test"})
    with temporary_settings({PREFECT_API_URL: services.prefect_url}):
        with get_client(sync_client=True) as client:
            for name in (alerts.FAILED, alerts.LATE):
                for automation in client.read_automations_by_name(name):
                    client.delete_automation(automation.id)


def _automations(settings: Settings, name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        with get_client(sync_client=True) as client:
            return client.read_automations_by_name(name)


def test_a_failed_run_delivers_one_message_with_the_stage_and_the_reason(
    alerting: Settings, webhook: tuple[str, list[dict[str, Any]]], fer_subset: Path
) -> None:
    _, received = webhook
    assert "sent through custom-webhook/fer-alerts-test" in alerts.ensure_alerts(alerting)
    alerts.ensure_alerts(alerting)  # again: updated in place, not duplicated
    for name in (alerts.FAILED, alerts.LATE):
        assert len(_automations(alerting, name)) == 1, name
    with pytest.raises(GateFailed, match="gate stage: gate failed: .* below the floor 0.9900"):
        run_retrain(alerting, str(fer_subset), QUICK, GateConfig(min_accuracy=0.99), SUBSET_QUALITY)
    deadline = time.monotonic() + 90
    while not received and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # a duplicate would be sent by the same event, about as fast
    (message,) = received
    assert message["subject"].startswith("FER retrain run ") and "Failed" in message["subject"]
    body = message["body"]
    assert "gate stage: gate failed" in body and "below the floor 0.9900" in body, body
    assert "/runs/flow-run/" in body, body


def test_a_run_still_late_after_the_limit_delivers_a_message(
    alerting: Settings, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Scheduled

    from flows.retrain import retrain

    _, received = webhook
    alerts.ensure_alerts(alerting, late_after=timedelta(seconds=10))
    due = datetime.now(UTC) - timedelta(seconds=30)
    with temporary_settings({PREFECT_API_URL: alerting.prefect_url}):
        with get_client(sync_client=True) as client:
            # Due half a minute ago and no worker will take it: it goes Late, then stays so.
            run = client.create_flow_run(retrain, state=Scheduled(scheduled_time=due))
            try:
                deadline = time.monotonic() + 120
                while not received and time.monotonic() < deadline:
                    time.sleep(0.5)
                late = client.read_flow_run(run.id).state
            finally:
                client.delete_flow_run(run.id)
    assert late is not None and late.name == "Late"
    (message,) = received
    assert message["subject"] == f"FER retrain run {run.name} is late", message
    body = message["body"]
    assert "has not started for 0.166667 minutes" in body and str(run.id) in body, body


def test_without_a_block_alerts_are_off_and_a_missing_block_is_named(services: Settings) -> None:
    from model.errors import ConfigError

    assert alerts.ensure_alerts(services).startswith("alerts are off: set FER_ALERT_BLOCK")
    missing = services.model_copy(update={"alert_block": "slack-webhook/nowhere"})
    with pytest.raises(ConfigError, match="FER_ALERT_BLOCK=slack-webhook/nowhere: no such"):
        alerts.ensure_alerts(missing)
