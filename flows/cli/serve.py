"""`fer serve`: the Gradio app that serves the champion."""

from __future__ import annotations

import typer

from flows.cli.common import clear_errors, stoppable
from model.settings import Settings, get_settings


def serve_until_stopped(settings: Settings) -> None:
    """Serve the champion until a stop signal; the watcher is stopped however it ends."""
    from serving.app import image_limits, make_app, start_watcher

    watcher = start_watcher(settings)
    typer.echo(
        f"Serving model {watcher.predictor.version if watcher.predictor else '-'} at "
        f"http://{settings.serve_host}:{settings.serve_port}   "
        f"Prefect UI: {settings.prefect_ui_url}"
    )
    app = make_app(watcher, image_limits(settings))
    try:
        app.launch(
            server_name=settings.serve_host,
            server_port=settings.serve_port,
            # Gradio's own cap keeps huge uploads off the disk; the app explains smaller ones.
            max_file_size=2 * settings.serve_max_upload_bytes,
        )
    except KeyboardInterrupt:
        # Gradio handles a stop once it serves; one that came while it was starting up is
        # the same clean shutdown.
        app.close()
    finally:
        watcher.stop()


@clear_errors
@stoppable
def serve() -> None:
    """Serve the champion model in a Gradio app (picks up new champions without restart)."""
    serve_until_stopped(get_settings())
