"""`fer serve`: the Gradio app that serves the champion."""

from __future__ import annotations

import typer

from flows.cli.common import clear_errors, stoppable
from model.settings import Settings, get_settings


def serve_until_stopped(settings: Settings) -> None:
    """Serve the page and the API until a stop signal; the watcher is stopped however it ends.

    uvicorn handles SIGINT and SIGTERM while it serves (requests in flight finish), then
    raises the signal again for the command's own handler; either way is a clean stop.
    """
    import uvicorn

    from serving.api import create_app, log_request_ids
    from serving.app import image_limits, start_watcher

    log_request_ids()
    watcher = start_watcher(settings)
    url = f"http://{settings.serve_host}:{settings.serve_port}"
    typer.echo(
        f"Serving model {watcher.predictor.version if watcher.predictor else '-'} at {url}   "
        f"API: {url}/docs   Prefect UI: {settings.prefect_ui_url}"
    )
    app = create_app(watcher, image_limits(settings))
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.serve_host, port=settings.serve_port, log_level="warning")
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()


@clear_errors
@stoppable
def serve() -> None:
    """Serve the champion model in a Gradio app (picks up new champions without restart)."""
    serve_until_stopped(get_settings())
