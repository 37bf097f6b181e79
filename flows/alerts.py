"""Alerts: Prefect automations that message people when a retrain run fails or runs late.

``fer deploy`` creates them, or updates them in place, through the notification block named
by ``FER_ALERT_BLOCK`` (a Slack webhook, an email block, any custom webhook):

* ``fer-retrain-failed``: a run of the ``retrain`` flow went Failed or Crashed. The message
  gives the run, the state's message (the stage and the reason: ``gate stage: gate failed:
  ...``) and the run's page in the UI.
* ``fer-retrain-late``: a run went Late and has not started an hour later (no worker, or the
  pool is paused). The body says when it was due, and gives its page.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from prefect.automations import AutomationCore
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from model.errors import ConfigError
from model.settings import Settings

logger = logging.getLogger(__name__)

FAILED = "fer-retrain-failed"
LATE = "fer-retrain-late"
#: How long a run may stay Late before the alert.
LATE_AFTER = timedelta(hours=1)
#: The flow the automations watch, matched by name (its id differs between servers).
_RETRAIN_FLOW = {"prefect.resource.role": "flow", "prefect.resource.name": "retrain"}

FAILED_BODY = """\
FER retrain run {{ flow_run.name }} is {{ flow_run.state.name }}.
{{ flow_run.state.message }}
{{ flow_run|ui_url }}"""
LATE_BODY = """\
FER retrain run {{ flow_run.name }} was due at {{ flow_run.expected_start_time }} and has not \
started for %s minutes: is a worker polling its work pool, and is the pool not paused?
{{ flow_run|ui_url }}"""


def _automations(block_id: UUID, late_after: timedelta) -> list[AutomationCore]:
    """The two automations, sending through the block ``block_id``."""
    return [
        AutomationCore(
            name=FAILED,
            description="A retrain run failed or crashed: which stage, and why.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                match_related=_RETRAIN_FLOW,  # type: ignore[arg-type]
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=[
                SendNotification(
                    block_document_id=block_id,
                    subject="FER retrain run {{ flow_run.name }}: {{ flow_run.state.name }}",
                    body=FAILED_BODY,
                )
            ],
        ),
        AutomationCore(
            name=LATE,
            description="A retrain run has been late for an hour.",
            trigger=EventTrigger(
                after={"prefect.flow-run.Late"},
                expect={
                    "prefect.flow-run.Pending",
                    "prefect.flow-run.Running",
                    "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed",
                },
                for_each={"prefect.resource.id"},
                match_related=_RETRAIN_FLOW,  # type: ignore[arg-type]
                posture=Posture.Proactive,
                threshold=1,
                within=late_after,
            ),  # fmt: skip
            actions=[
                SendNotification(
                    block_document_id=block_id,
                    subject="FER retrain run {{ flow_run.name }} is late",
                    body=LATE_BODY % f"{late_after.total_seconds() / 60:g}",
                )
            ],
        ),
    ]


def _block_id(client: SyncPrefectClient, name: str) -> UUID:
    """The id of the block document ``<type-slug>/<name>``.

    Raises:
        ConfigError: no such block on the server.
    """
    slug, _, document = name.partition("/")
    try:
        return client.read_block_document_by_name(document, slug, include_secrets=False).id
    except ObjectNotFound as error:
        raise ConfigError(
            f"FER_ALERT_BLOCK={name}: no such notification block on the Prefect server; create "
            "it in the UI (Blocks) or in Python (e.g. SlackWebhook(url=...).save('fer-alerts')), "
            "or unset FER_ALERT_BLOCK"
        ) from error


def ensure_alerts(settings: Settings, late_after: timedelta = LATE_AFTER) -> str:
    """Create or update the alert automations; say what was done, in one line.

    Args:
        settings: the Prefect server and ``FER_ALERT_BLOCK``.
        late_after: how long a run may stay Late before the alert.

    Raises:
        ConfigError: ``FER_ALERT_BLOCK`` names no block on the server.
    """
    if settings.alert_block is None:
        return (
            "alerts are off: set FER_ALERT_BLOCK to a notification block "
            "(<block-type-slug>/<name>, e.g. slack-webhook/fer-alerts) and run `fer deploy` again"
        )
    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        with get_client(sync_client=True) as client:
            block_id = _block_id(client, settings.alert_block)
            for automation in _automations(block_id, late_after):
                existing = client.read_automations_by_name(automation.name)
                if existing:
                    client.update_automation(existing[0].id, automation)
                    for duplicate in existing[1:]:  # left by a run of an older version
                        client.delete_automation(duplicate.id)
                else:
                    client.create_automation(automation)
    logger.info("alert automations %s and %s send through %s", FAILED, LATE, settings.alert_block)
    return (
        f"alerts: failed or crashed retrain runs, and runs late by an hour, are sent through "
        f"{settings.alert_block}"
    )
