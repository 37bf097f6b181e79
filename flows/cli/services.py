"""`fer services up|down|status` and `fer worker`: the local services and a Prefect worker."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import clear_errors, stoppable
from model.errors import ConfigError
from model.settings import Settings, get_settings

app = typer.Typer(
    help="Start, stop and inspect the local Prefect and S3 services.", no_args_is_help=True
)


def print_services(settings: Settings) -> None:
    """One line per local service: up or down, URL, note and log file."""
    from infra.services import services_status

    for status in services_status(settings):
        mark = "up  " if status.running else "down"
        typer.echo(
            f"{mark} {status.name:<10} {status.url or '-':<28} {status.note} "
            f"(log: {status.log_path})"
        )


@app.command("up")
@clear_errors
def services_up_command() -> None:
    """Start the Prefect server and SeaweedFS on 127.0.0.1 (reuses running ones)."""
    from infra.services import services_up

    settings = get_settings()
    services_up(settings)
    print_services(settings)
    typer.echo(f"Prefect UI: {settings.prefect_ui_url}   S3 endpoint: {settings.s3_url}")


@app.command("down")
@clear_errors
def services_down_command() -> None:
    """Stop the local services started by `fer services up`."""
    from infra.services import services_down

    stopped = services_down(get_settings())
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command("status")
@clear_errors
def services_status_command() -> None:
    """Show whether the local services are running and healthy."""
    print_services(get_settings())


def _job_template(path: Path | None) -> dict | None:
    """The base job template a missing work pool is created with, read from a JSON file."""
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not JSON ({error}); pass a base job template file") from error


@clear_errors
@stoppable
def worker(
    with_healthcheck: Annotated[
        bool,
        typer.Option(
            help="Serve /health on PREFECT_WORKER_WEBSERVER_PORT (8080) for container probes."
        ),
    ] = False,
    base_job_template: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="JSON base job template a missing pool is created with "
            "(infra/k8s/work-pool-cpu.json for a Kubernetes pool).",
        ),
    ] = None,
) -> None:
    """Run a Prefect worker on FER_WORK_POOL in the foreground (Ctrl-C stops it)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import ensure_work_pool
    from infra.services import require_prefect, worker_command, worker_env
    from infra.signals import run_in_foreground

    template = _job_template(base_job_template)
    settings = get_settings()
    require_prefect(settings)
    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        ensure_work_pool(settings.work_pool, settings.work_pool_type, template)
    command = worker_command(settings, with_healthcheck, base_job_template)
    raise typer.Exit(run_in_foreground(command, {**os.environ, **worker_env(settings)}))
