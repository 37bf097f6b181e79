"""`fer retrain`, `fer deploy` and `fer up`: the retrain flow once, nightly, or as the main job."""

from __future__ import annotations

import sys
from typing import Annotated, Any, cast

import typer

from flows.cli.common import (
    BatchSize,
    Dataset,
    Epochs,
    LearningRate,
    ProfileOption,
    QualityConfigFile,
    Seed,
    clear_errors,
    stoppable,
    with_gate_options,
)
from flows.cli.serve import Public, check_exposure, serve_until_stopped
from model.errors import ConfigError, FerError
from model.evaluation.gate import GateConfig
from model.settings import Settings, get_settings
from model.training.config import Profile, TrainConfig
from validation.config import read_quality_config

Cron = Annotated[
    str | None,
    typer.Option(help="Cron schedule (five fields); default: the FER_RETRAIN_CRON setting."),
]
Timezone = Annotated[
    str | None,
    typer.Option(help="IANA time zone of the schedule; default: FER_RETRAIN_TIMEZONE."),
]
Pool = Annotated[
    str | None,
    typer.Option(help="Work pool its runs go to; default: the FER_WORK_POOL setting."),
]
DeployProfile = Annotated[
    str,
    typer.Option(
        help="Training profile of the scheduled runs: `cpu` (the nightly recipe) or "
        "`gpu` (for a pool of GPU nodes)."
    ),
]


@clear_errors
@stoppable
@with_gate_options
def retrain(
    dataset: Dataset = None,
    profile: ProfileOption = "quick",
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    learning_rate: LearningRate = None,
    seed: Seed = None,
    quality_config: QualityConfigFile = None,
    *,
    gate: GateConfig,
) -> None:
    """Retrain once: acquire, validate, clean, train, evaluate, gate, publish and promote."""
    from infra.services import require_prefect

    config = TrainConfig.from_profile(
        profile, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed
    )
    quality = read_quality_config(quality_config)
    settings = get_settings()
    require_prefect(settings)  # before the flow's imports, so a missing server is told at once
    from flows.retrain import run_retrain

    version = run_retrain(settings, dataset, config, gate, quality, progress=sys.stdout)
    typer.echo(f"promoted model version {version}")


@clear_errors
def deploy(
    cron: Cron = None,
    timezone: Timezone = None,
    paused: Annotated[bool, typer.Option(help="Create the schedule paused.")] = False,
    pool: Pool = None,
    profile: DeployProfile = "cpu",
) -> None:
    """Create or update the `retrain/nightly` and `health/daily` deployments (pool, cron)."""
    from flows.deploy import deploy_retrain
    from infra.services import require_prefect

    if profile not in ("cpu", "gpu"):
        raise ConfigError(f"--profile must be cpu or gpu, not {profile!r}")
    settings = get_settings()
    require_prefect(settings)
    deployed = deploy_retrain(
        settings,
        cron=cron,
        timezone=timezone,
        paused=paused,
        work_pool=pool,
        profile=cast(Profile, profile),
    )
    typer.echo(
        f"deployment {deployed.name} on work pool {deployed.work_pool}: "
        f"cron {deployed.cron!r} ({deployed.timezone}){' paused' if deployed.paused else ''}\n"
        f"run it now:  prefect deployment run '{deployed.name}'\n"
        f"a worker runs it:  fer worker   (or `fer up`, which starts one)\n"
        f"health report: deployment health/daily, cron {deployed.health_cron!r} "
        f"({deployed.timezone}); its table and chart are the run's artifacts in the UI\n"
        f"{deployed.alerts}"
    )


def _run_first_retrain(settings: Settings, parameters: dict[str, Any]) -> None:
    """Run the deployment once through the worker; a failure keeps a previous champion."""
    from flows.deploy import run_deployed_retrain
    from flows.progress import ProgressDisplay
    from model.registry.store import ModelRegistry

    typer.echo("first retrain: running `retrain/nightly` through the worker")
    finished = run_deployed_retrain(settings, parameters, progress=ProgressDisplay(sys.stdout))
    url = f"{settings.prefect_ui_url}/runs/flow-run/{finished.flow_run_id}"
    registry = ModelRegistry.from_settings(settings)
    if finished.completed:
        champion = registry.champion()
        typer.echo(f"run {finished.name} completed: {url}")
        typer.echo(f"promoted model version {champion.version if champion else '-'}")
        return
    reason = f"run {finished.name} ended {finished.state}: {finished.message} ({url})"
    # A failed run leaves the previous champion in place: keep serving it if there is one.
    if registry.champion() is None:
        raise FerError(reason)
    typer.secho(
        f"retrain failed, serving the previous champion: {reason}",
        fg=typer.colors.YELLOW,
        err=True,
    )


def _start_platform(settings: Settings) -> None:
    """Services, the nightly deployment and a worker, each reused when already there."""
    from flows.deploy import deploy_retrain
    from infra.services import services_up, worker_up

    services_up(settings)
    typer.echo(f"Prefect UI: {settings.prefect_ui_url}   S3 endpoint: {settings.s3_url}")
    deployed = deploy_retrain(settings)
    worker = worker_up(settings)
    typer.echo(
        f"deployment {deployed.name}: cron {deployed.cron!r} ({deployed.timezone}); "
        f"health/daily: cron {deployed.health_cron!r}; "
        f"worker {worker.note} (log: {worker.log_path}); {deployed.alerts}"
    )


@clear_errors
@stoppable
@with_gate_options
def up(
    dataset: Dataset = None,
    profile: ProfileOption = "quick",
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    quality_config: QualityConfigFile = None,
    public: Public = False,
    *,
    gate: GateConfig,
) -> None:
    """The main job: services, the nightly deployment and a worker, one retrain, then serve.

    The first retrain runs through the deployment with the options given here (default: the
    quick profile); the nightly schedule keeps the deployment's own defaults (the cpu recipe).
    """
    quality = read_quality_config(quality_config)
    config = TrainConfig.from_profile(profile, epochs=epochs, batch_size=batch_size)
    settings = get_settings()
    check_exposure(settings, public)
    _start_platform(settings)
    parameters = {
        "dataset": dataset,
        "train_config": config.model_dump(mode="json"),
        "gate_config": gate.model_dump(mode="json"),
        "quality_config": quality.model_dump(mode="json"),
    }
    _run_first_retrain(settings, parameters)
    serve_until_stopped(settings)
