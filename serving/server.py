"""The HTTP server of the app: uvicorn, with a drain before it stops on SIGTERM.

Kubernetes sends SIGTERM while the endpoint may still be in the Service's list. The server
first answers ``/readyz`` with 503 for ``drain_seconds`` while serving every request as usual,
so load balancers and probes take it out; then uvicorn stops accepting connections, lets the
requests in flight finish (up to :data:`GRACE_SECONDS`) and the process exits. SIGINT (Ctrl-C)
and a second SIGTERM skip the drain.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

logger = logging.getLogger(__name__)

#: How long requests in flight may take to finish once the server stops accepting new ones.
GRACE_SECONDS = 15


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains on the first SIGTERM before it shuts down.

    Args:
        config: uvicorn's configuration.
        draining: set on SIGTERM; the app's ``/readyz`` answers 503 while it is set.
        drain_seconds: how long to keep serving after SIGTERM before shutting down.
    """

    def __init__(
        self, config: uvicorn.Config, draining: threading.Event, drain_seconds: float
    ) -> None:
        super().__init__(config)
        self.draining = draining
        self.drain_seconds = drain_seconds

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Drain on the first SIGTERM; any other stop signal shuts down at once (gracefully)."""
        if sig == signal.SIGTERM and not self.draining.is_set():
            self.draining.set()
            logger.info(
                "SIGTERM: /readyz answers 503 for %.1f s while serving, then the server stops",
                self.drain_seconds,
            )
            timer = threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame))
            timer.daemon = True
            timer.start()
            return
        super().handle_exit(sig, frame)


def serving_server(
    app: ASGIApp, host: str, port: int, draining: threading.Event, drain_seconds: float
) -> DrainingServer:
    """The server for ``app``; its logs go through the root logger (and so its format)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # no handlers of uvicorn's own: FER_LOG_FORMAT applies to its lines
        log_level="warning",
        access_log=False,  # the app logs each API request with its request ID
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    return DrainingServer(config, draining, drain_seconds)
