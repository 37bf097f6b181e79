"""The retrain's concurrency slot against a real Prefect server whose API blips."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.retrain import RETRAIN_LIMIT
from model.settings import Settings
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


class BlinkingProxy:
    """A TCP proxy to the Prefect API that drops lease renewals while :attr:`blip` is set."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.blip = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests and self.blip.is_set() and b"/renew" in data:
                    break  # the connection drops with the request unanswered
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            end.close()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def proxy(services: Settings) -> Iterator[BlinkingProxy]:
    proxy = BlinkingProxy(services.prefect_port)
    try:
        yield proxy
    finally:
        proxy.close()


#: A retrain's slot held in a process of its own (Prefect's slot service keeps the API address
#: it first saw for the life of the process): it reports how the failed renewal was logged.
HOLDER = textwrap.dedent(
    """
    import logging
    from flows.retrain import ensure_retrain_limit, retrain_slot

    seen = []
    class Seen(logging.Handler):
        def emit(self, record):
            if "lease renewal failed" in record.getMessage():
                seen.append(record)

    logging.getLogger("prefect").addHandler(Seen())
    ensure_retrain_limit()
    with retrain_slot(lease_seconds=60):
        # Prefect renews the lease right after taking the slot; the renewal fails (3 tries).
        for _ in range(600):
            if seen:
                break
            time.sleep(0.1)
        print("work goes on", flush=True)
    for record in seen:
        print(record.levelname, record.getMessage().split(".")[0], flush=True)
    """
).replace("import logging", "import logging, time")


def test_a_failed_lease_renewal_is_logged_and_the_run_goes_on(
    services: Settings, proxy: BlinkingProxy
) -> None:
    proxy.blip.set()  # every renewal is dropped; taking and releasing the slot go through
    env = {
        **os.environ,
        "PREFECT_API_URL": f"http://127.0.0.1:{proxy.port}/api",
        "PREFECT_CLIENT_MAX_RETRIES": "0",
    }
    holder = subprocess.run(
        [sys.executable, "-c", HOLDER],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = holder.stdout.splitlines()
    assert holder.returncode == 0, holder.stdout + holder.stderr[-3000:]
    # The work inside was not cancelled, and the failure was a warning, not a termination.
    assert lines == [
        "work goes on",
        "WARNING Concurrency lease renewal failed - slots are no longer reserved",
    ], holder.stdout + holder.stderr[-3000:]
    with temporary_settings({PREFECT_API_URL: services.prefect_url}):
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(RETRAIN_LIMIT)
    assert limit.active_slots == 0  # released at the end although the renewal had failed
