"""The ``fer`` command line, one module per command group.

``common`` (errors, signals, shared options), ``services`` (local services, the worker),
``training`` (retrain, deploy, the main job ``up``), ``serve``, ``models`` (the store's versions,
``evaluate``) and ``data``. The functions here only parse options and print; the work is done
below ``flows/`` (in ``model/``, ``validation/``, ``serving/``, ``infra/``) or by the flows.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from flows.cli import data, models, predict, serve, services, training
from model.errors import ConfigError
from model.logs import LogFormat, configure_logging
from model.settings import get_settings

app = typer.Typer(
    help="FER platform: train, gate, publish and serve a facial-emotion classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    """Configure logging for every command."""
    configure_logging(logging.DEBUG if verbose else logging.INFO, _log_format())
    # httpx logs every health-check request at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Ship the library's own log lines (epochs, data checks) to the Prefect UI with each run;
    # read when prefect is first imported, which the commands do lazily after this.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "model,validation,infra")
    # The same loggers also run outside flow runs (`fer data validate`): log locally there.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def _log_format() -> LogFormat:
    """``FER_LOG_FORMAT``; text while the settings are invalid (the command then says why)."""
    try:
        return get_settings().log_format
    except ConfigError:
        return "text"


# `fer --help` lists the commands in this order, then the groups in theirs.
app.add_typer(data.app, name="data")
app.add_typer(services.app, name="services")
app.command()(training.retrain)
app.command()(serve.serve)
app.add_typer(models.app, name="models")
app.command()(training.deploy)
app.command()(services.worker)
app.command()(training.up)
app.command()(models.evaluate)
app.command()(predict.predict)

__all__ = ["app"]
