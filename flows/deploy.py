"""The ``retrain/nightly`` deployment on a process work pool, and running it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.workers.process import ProcessWorker

from flows.retrain import ensure_retrain_limit, retrain
from model.errors import ConfigError
from model.settings import Settings, check_cron, check_timezone

logger = logging.getLogger(__name__)

#: The project checkout the worker runs flows from (its pull step changes into it).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = "flows/retrain.py:retrain"
DEPLOYMENT = "nightly"
#: How ``prefect deployment run`` names it.
DEPLOYMENT_PATH = f"retrain/{DEPLOYMENT}"


@dataclass(frozen=True)
class Deployed:
    """What ``deploy_retrain`` created or updated."""

    deployment_id: UUID
    name: str
    work_pool: str
    cron: str
    timezone: str
    paused: bool


@dataclass(frozen=True)
class FinishedRun:
    """A deployment run in a final state, as ``fer up`` reports it."""

    flow_run_id: UUID
    name: str
    completed: bool
    state: str
    message: str


def ensure_work_pool(name: str) -> None:
    """Create the process work pool ``name`` unless it exists.

    Raises:
        ConfigError: if a pool of that name exists with another worker type.
    """
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type="process",
                        base_job_template=ProcessWorker.get_default_base_job_template(),
                        description="FER platform: runs flows as local processes",
                    )
                )
            except ObjectAlreadyExists:
                pass
            return
    if pool.type != "process":
        raise ConfigError(
            f"work pool {name!r} exists with type {pool.type!r}, not 'process'; "
            "choose another pool with FER_WORK_POOL or delete that one"
        )


def deploy_retrain(
    settings: Settings,
    cron: str | None = None,
    timezone: str | None = None,
    paused: bool = False,
) -> Deployed:
    """Create or update ``retrain/nightly``: the flow from this checkout, on a cron schedule.

    Its parameters default to the flow's (the ``cpu`` recipe, the default gate and data
    bounds), typed and described in the UI. Re-running it updates the deployment in place.

    Args:
        settings: platform settings (Prefect API, work pool, default schedule).
        cron: five-field cron expression; default ``FER_RETRAIN_CRON``.
        timezone: IANA zone the cron is read in; default ``FER_RETRAIN_TIMEZONE``.
        paused: create the schedule paused.

    Returns:
        The deployment's id and schedule.

    Raises:
        ConfigError: for an invalid cron, time zone or work pool.
    """
    try:
        cron = check_cron(cron or settings.retrain_cron)
        timezone = check_timezone(timezone or settings.retrain_timezone)
    except ValueError as error:
        raise ConfigError(f"invalid retrain schedule: {error}") from error
    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        ensure_work_pool(settings.work_pool)
        ensure_retrain_limit()
        try:
            schedule = Cron(cron, timezone=timezone)
        except ValueError as error:
            raise ConfigError(f"invalid retrain schedule {cron!r}: {error}") from error
        source = retrain.from_source(source=str(PROJECT_ROOT), entrypoint=ENTRYPOINT)
        deployment_id = source.deploy(
            name=DEPLOYMENT,
            work_pool_name=settings.work_pool,
            schedules=[schedule],
            paused=paused,
            description="Nightly retrain: acquire, validate, train (cpu recipe), evaluate, "
            "gate, publish and promote the facial-emotion model.",
            tags=["fer"],
            build=False,
            push=False,
            print_next_steps=False,
            ignore_warnings=True,
        )
    logger.info("deployment %s (%s) on pool %s", DEPLOYMENT_PATH, deployment_id, settings.work_pool)
    return Deployed(
        deployment_id,
        DEPLOYMENT_PATH,
        settings.work_pool,
        cron,
        timezone,
        paused,
    )


def run_deployed_retrain(
    settings: Settings, parameters: dict[str, Any], timeout: float | None = None
) -> FinishedRun:
    """Start ``retrain/nightly`` through the worker and wait for its final state.

    Args:
        settings: platform settings (Prefect API).
        parameters: flow parameters overriding the deployment's (JSON-compatible).
        timeout: seconds to wait; None waits for as long as the run takes.

    Returns:
        The run's id, name, final state and its message (the reason, when it failed).
    """
    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        run = run_deployment(DEPLOYMENT_PATH, parameters=parameters, timeout=timeout)
    state = run.state
    return FinishedRun(
        run.id,
        run.name,
        bool(state and state.is_completed()),
        state.name if state else "unknown",
        (state.message or "") if state else "",
    )
