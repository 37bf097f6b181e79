"""`fer serve`: the Gradio page and the REST API that serve the champion."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from flows.cli.common import clear_errors, stoppable
from model.errors import ConfigError
from model.settings import Settings, get_settings

Public = Annotated[
    bool,
    typer.Option(
        "--public",
        help="Serve on a host other than loopback without FER_SERVE_AUTH (anyone who reaches "
        "the port may use the app).",
    ),
]


def check_exposure(settings: Settings, public: bool) -> None:
    """Refuse to serve beyond this machine without access control, unless told to.

    Raises:
        ConfigError: the host is not loopback, FER_SERVE_AUTH is unset and ``public`` is off.
    """
    from serving.access import is_loopback

    if settings.serve_auth is None and not public and not is_loopback(settings.serve_host):
        raise ConfigError(
            f"FER_SERVE_HOST={settings.serve_host} makes the app reachable from other machines "
            "and FER_SERVE_AUTH is unset; set FER_SERVE_AUTH (a bearer token or user:password "
            "pairs), or pass --public to serve it open"
        )


def serve_until_stopped(settings: Settings) -> None:
    """Serve the page and the API until a stop signal; the watcher is stopped however it ends.

    On SIGTERM the server drains first (``/readyz`` answers 503 for FER_SERVE_DRAIN_SECONDS);
    then, as on SIGINT, uvicorn lets the requests in flight finish and raises the signal again
    for the command's own handler; either way is a clean stop.
    """
    from serving.access import parse_auth
    from serving.api import create_app, log_request_ids
    from serving.app import image_limits, start_watcher
    from serving.server import serving_server

    auth = settings.serve_auth
    credentials = parse_auth(auth.get_secret_value()) if auth is not None else None
    log_request_ids(settings.log_format)
    watcher = start_watcher(settings)
    url = f"http://{settings.serve_host}:{settings.serve_port}"
    typer.echo(
        f"Serving model {watcher.predictor.version if watcher.predictor else '-'} at {url}   "
        f"API: {url}/docs   Prefect UI: {settings.prefect_ui_url}"
        + ("   (access: FER_SERVE_AUTH)" if credentials else "")
    )
    draining = threading.Event()
    app = create_app(
        watcher,
        image_limits(settings),
        credentials=credentials,
        draining=draining,
        max_stale_seconds=settings.serve_max_stale_seconds,
    )
    server = serving_server(
        app, settings.serve_host, settings.serve_port, draining, settings.serve_drain_seconds
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()


@clear_errors
@stoppable
def serve(public: Public = False) -> None:
    """Serve the champion: the page and the REST API (picks up new champions without restart)."""
    settings = get_settings()
    check_exposure(settings, public)
    serve_until_stopped(settings)
