"""The ``retrain/nightly`` and ``health/daily`` deployments on a work pool, and running them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.schedules import Cron, Schedule
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling
from prefect.workers.process import ProcessWorker

from flows.alerts import ensure_alerts
from flows.health import daily
from flows.progress import ProgressDisplay, follow_flow_run
from flows.retrain import ensure_retrain_limit, retrain
from flows.storage import ensure_result_storage
from model.errors import ConfigError
from model.settings import Settings, check_cron, check_timezone
from model.training.config import Profile, TrainConfig

logger = logging.getLogger(__name__)

#: The project checkout the worker runs flows from (its pull step changes into it).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = "flows/retrain.py:retrain"
DEPLOYMENT = "nightly"
#: How ``prefect deployment run`` names it.
DEPLOYMENT_PATH = f"retrain/{DEPLOYMENT}"
HEALTH_ENTRYPOINT = "flows/health.py:daily"
HEALTH_DEPLOYMENT = "daily"
HEALTH_PATH = f"health/{HEALTH_DEPLOYMENT}"
#: How both deployments are made: from this checkout as it is (no image, nothing pushed).
_FROM_CHECKOUT: dict[str, Any] = {
    "tags": ["fer"],
    "build": False,
    "push": False,
    "print_next_steps": False,
    "ignore_warnings": True,
}


@dataclass(frozen=True)
class Deployed:
    """What ``deploy_retrain`` created or updated."""

    deployment_id: UUID
    name: str
    work_pool: str
    cron: str
    timezone: str
    paused: bool
    #: The alerts' state, in one line (see :func:`flows.alerts.ensure_alerts`).
    alerts: str
    #: The ``health/daily`` deployment's id and its cron expression.
    health_deployment_id: UUID
    health_cron: str


@dataclass(frozen=True)
class FinishedRun:
    """A deployment run in a final state, as ``fer up`` reports it."""

    flow_run_id: UUID
    name: str
    completed: bool
    state: str
    message: str


def ensure_work_pool(
    name: str, pool_type: str = "process", base_job_template: dict[str, Any] | None = None
) -> None:
    """Create the work pool ``name`` of ``pool_type`` unless it exists.

    Args:
        name: the pool.
        pool_type: ``process`` or ``kubernetes``.
        base_job_template: the template a new pool gets; a process pool defaults to
            Prefect's own, a Kubernetes pool needs one (infra/k8s/work-pool-*.json).

    Raises:
        ConfigError: if a pool of that name exists with another worker type, or a missing
            Kubernetes pool has no template to be created from.
    """
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            if base_job_template is None and pool_type != "process":
                raise ConfigError(
                    f"work pool {name!r} does not exist; start its worker first "
                    f"(fer worker --base-job-template TEMPLATE) or create it: prefect "
                    f"work-pool create {name} --type {pool_type} --base-job-template TEMPLATE, "
                    "where TEMPLATE is infra/k8s/work-pool-cpu.json, or "
                    "infra/k8s/work-pool-gpu.json for a GPU pool"
                ) from None
            try:
                client.create_work_pool(
                    WorkPoolCreate(
                        name=name,
                        type=pool_type,
                        base_job_template=base_job_template
                        or ProcessWorker.get_default_base_job_template(),
                        description=f"FER platform: runs flows on {pool_type} infrastructure",
                    )
                )
            except ObjectAlreadyExists:
                pass
            return
    if pool.type != pool_type:
        raise ConfigError(
            f"work pool {name!r} exists with type {pool.type!r}, not {pool_type!r}; "
            "choose another pool with FER_WORK_POOL, set FER_WORK_POOL_TYPE to match, "
            "or delete that pool"
        )


def _checked_schedule(
    settings: Settings, cron: str | None, timezone: str | None
) -> tuple[str, str]:
    """The cron expression and time zone to deploy with, checked before Prefect is contacted.

    Args:
        settings: platform settings (the default schedule).
        cron: five-field cron expression; None for ``FER_RETRAIN_CRON``.
        timezone: IANA zone the cron is read in; None for ``FER_RETRAIN_TIMEZONE``.

    Returns:
        The cron expression and the time zone.

    Raises:
        ConfigError: for an invalid cron or time zone.
    """
    try:
        cron = check_cron(cron or settings.retrain_cron)
        timezone = check_timezone(timezone or settings.retrain_timezone)
    except ValueError as error:
        raise ConfigError(f"invalid retrain schedule: {error}") from error
    return cron, timezone


def _profile_parameters(profile: Profile) -> dict[str, Any]:
    """The deployment's parameters for a training profile (none for the flow's defaults)."""
    parameters: dict[str, Any] = {}
    if profile != "cpu":  # the flow's own default is the cpu recipe
        parameters["train_config"] = TrainConfig.profile(profile).model_dump(mode="json")
    return parameters


def _cron_schedule(cron: str, timezone: str) -> Schedule:
    """Prefect's schedule for the checked cron expression.

    Raises:
        ConfigError: if Prefect refuses the expression.
    """
    try:
        return Cron(cron, timezone=timezone)
    except ValueError as error:
        raise ConfigError(f"invalid retrain schedule {cron!r}: {error}") from error


def _deploy_nightly(
    pool: str, schedule: Schedule, parameters: dict[str, Any], paused: bool, profile: Profile
) -> UUID:
    """Create or update the deployment of the flow from this checkout (Prefect API set).

    Args:
        pool: the work pool its runs go to.
        schedule: when it runs.
        parameters: the flow parameters it overrides.
        paused: create the schedule paused.
        profile: the training profile named in its description.

    Returns:
        The deployment's id.
    """
    source = retrain.from_source(source=str(PROJECT_ROOT), entrypoint=ENTRYPOINT)
    return source.deploy(
        name=DEPLOYMENT,
        work_pool_name=pool,
        schedules=[schedule],
        parameters=parameters,
        paused=paused,
        description=f"Nightly retrain: acquire, validate, clean, train ({profile} recipe), "
        "evaluate, gate, publish and promote the facial-emotion model.",
        # A second run waits on the server for the first to end, before a worker starts any
        # process or pod for it (the flow's own slot then never keeps one idle).
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        **_FROM_CHECKOUT,
    )


def _deploy_health(pool: str, schedule: Schedule, paused: bool) -> UUID:
    """Create or update ``health/daily`` from this checkout (Prefect API set).

    Args:
        pool: the work pool its runs go to.
        schedule: when it runs.
        paused: create the schedule paused.

    Returns:
        The deployment's id.
    """
    source = daily.from_source(source=str(PROJECT_ROOT), entrypoint=HEALTH_ENTRYPOINT)
    return source.deploy(
        name=HEALTH_DEPLOYMENT,
        work_pool_name=pool,
        schedules=[schedule],
        paused=paused,
        description="Daily health report of the served model: predictions per emotion, "
        "confidence, faces per photo, refusals, latency, the champion's age, and drift.",
        **_FROM_CHECKOUT,
    )


def deploy_retrain(
    settings: Settings,
    cron: str | None = None,
    timezone: str | None = None,
    paused: bool = False,
    work_pool: str | None = None,
    profile: Profile = "cpu",
) -> Deployed:
    """Create or update ``retrain/nightly``: the flow from this checkout, on a cron schedule.

    Its parameters default to the flow's (the ``cpu`` recipe, the default gate and data
    bounds), typed and described in the UI. Re-running it updates the deployment in place.
    ``health/daily`` (``FER_HEALTH_CRON``, same pool and time zone) is deployed beside it.

    Args:
        settings: platform settings (Prefect API, work pool, default schedule).
        cron: five-field cron expression; default ``FER_RETRAIN_CRON``.
        timezone: IANA zone the cron is read in; default ``FER_RETRAIN_TIMEZONE``.
        paused: create the schedule paused.
        work_pool: the pool its runs go to; default ``FER_WORK_POOL`` (of type
            ``FER_WORK_POOL_TYPE``).
        profile: the training profile its runs use by default (``cpu`` on a CPU pool,
            ``gpu`` on a pool of GPU nodes).

    Returns:
        The deployment's id and schedule.

    Raises:
        ConfigError: for an invalid cron, time zone or work pool, or an alert block that
            does not exist.
    """
    cron, timezone = _checked_schedule(settings, cron, timezone)
    health_cron = settings.health_cron  # checked when the settings were read
    pool = work_pool or settings.work_pool
    parameters = _profile_parameters(profile)
    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        ensure_work_pool(pool, settings.work_pool_type)
        ensure_retrain_limit()
        # Built after the pool and limit checks, so their errors are the ones reported first.
        schedule = _cron_schedule(cron, timezone)
        ensure_result_storage(settings)  # where its runs keep results, wherever they run
        deployment_id = _deploy_nightly(pool, schedule, parameters, paused, profile)
        health_id = _deploy_health(pool, _cron_schedule(health_cron, timezone), paused)
    logger.info("deployment %s (%s) on pool %s", DEPLOYMENT_PATH, deployment_id, pool)
    logger.info("deployment %s (%s) on pool %s", HEALTH_PATH, health_id, pool)
    alerts = ensure_alerts(settings)
    return Deployed(
        deployment_id, DEPLOYMENT_PATH, pool, cron, timezone, paused, alerts, health_id,
        health_cron,
    )  # fmt: skip


def run_deployed_retrain(
    settings: Settings,
    parameters: dict[str, Any],
    timeout: float | None = None,
    progress: ProgressDisplay | None = None,
) -> FinishedRun:
    """Start ``retrain/nightly`` through the worker and wait for its final state.

    Args:
        settings: platform settings (Prefect API).
        parameters: flow parameters overriding the deployment's (JSON-compatible).
        timeout: seconds to wait; None waits for as long as the run takes.
        progress: where to show the run's stages and training progress while waiting
            (then ``timeout`` is not applied); None waits silently.

    Returns:
        The run's id, name, final state and its message (the reason, when it failed).
    """
    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        if progress is None:
            run = run_deployment(DEPLOYMENT_PATH, parameters=parameters, timeout=timeout)
        else:
            started = run_deployment(DEPLOYMENT_PATH, parameters=parameters, timeout=0)
            try:
                run = follow_flow_run(started.id, progress)
            except KeyboardInterrupt:
                # Whoever stops the command that started this run stops the run too.
                try:
                    cancel_flow_run(started.id, "stopped by the command that started it")
                except Exception as error:  # the stop must still happen
                    logger.warning("could not cancel flow run %s: %s", started.id, error)
                raise
            finally:
                progress.close()
    state = run.state
    return FinishedRun(
        run.id,
        run.name,
        bool(state and state.is_completed()),
        state.name if state else "unknown",
        (state.message or "") if state else "",
    )


def cancel_flow_run(flow_run_id: UUID, reason: str) -> None:
    """Ask the server to cancel a flow run, as ``prefect flow-run cancel`` does.

    Not forced, so the server's rules apply: a run no worker has started is cancelled at once,
    a running one through its worker (which stops its process), a finished one stays as it is,
    and the deployment's concurrency slot is released once.

    Args:
        flow_run_id: the run.
        reason: the message its Cancelling state carries.
    """
    with get_client(sync_client=True) as client:
        result = client.set_flow_run_state(flow_run_id, Cancelling(message=reason))
    now = result.state.name if result.state is not None else result.status.value
    logger.warning("cancelling flow run %s (%s): %s", flow_run_id, reason, now)
