"""`fer services`: reuse of running services and clear errors for taken ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from infra.services import (
    free_port,
    log_path,
    port_in_use,
    read_state,
    services_status,
    services_up,
)
from model.errors import ServiceError
from model.settings import Settings

pytestmark = pytest.mark.integration


def test_second_up_reuses_running_services(services: Settings) -> None:
    before = {name: read_state(services, name).pid for name in ("prefect", "seaweedfs")}
    statuses = services_up(services)
    assert {s.name: s.pid for s in statuses} == before
    assert all(s.note == "already running" for s in statuses)
    assert all(s.running and s.url.startswith("http://127.0.0.1:") for s in statuses)


def test_services_bind_loopback_only(services: Settings) -> None:
    for status in services_status(services):
        if status.name == "worker":
            continue  # it listens on no port; it polls the Prefect server
        port = int(status.url.rsplit(":", 1)[1])
        # Nothing answers on another local address; a wildcard bind would answer here.
        with socket.socket() as probe:
            probe.settimeout(1)
            assert probe.connect_ex(("127.0.0.2", port)) != 0


def test_seaweedfs_writes_its_own_logs_beside_service_log(services: Settings) -> None:
    folder = log_path(services, "seaweedfs").parent
    assert list(folder.glob("weed.*.log.INFO.*")), "glog files belong here, not in /tmp"


@pytest.mark.parametrize("setting", ["prefect_port", "s3_port"])
def test_taken_port_names_port_and_setting(setting: str, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = {"prefect_port": free_port(), "s3_port": free_port(), setting: taken}
        settings = Settings(home=tmp_path, **ports)
        with pytest.raises(ServiceError) as error:
            services_up(settings, timeout=30)
    message = str(error.value)
    assert f"port {taken}" in message and f"FER_{setting.upper()}" in message
    assert all(not s.running for s in services_status(settings)), "nothing may be left started"


def test_seaweedfs_retries_when_an_internal_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import infra.services as services_module

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real_free_port = services_module.free_port
        picks = iter([taken])  # the first internal port picked is already taken
        monkeypatch.setattr(
            services_module, "free_port", lambda: next(picks, None) or real_free_port()
        )
        settings = Settings(home=tmp_path, s3_port=real_free_port(), prefect_port=real_free_port())
        try:
            state = services_module.start_seaweedfs(settings, timeout=60)
            assert taken not in state.extra_ports.values()
            log = services_module.log_path(settings, "seaweedfs").read_text()
            assert f"port {taken}" in log  # the first start failed on the taken port
        finally:
            services_module.services_down(settings)


def test_a_failed_start_stops_what_this_up_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import infra.services as services_module

    def broken_weed(settings: Settings) -> tuple[list[str], dict[str, str], dict[str, int]]:
        script = "import sys; print('weed: cannot open the data folder'); sys.exit(2)"
        return [sys.executable, "-c", script], {}, {}

    monkeypatch.setattr(services_module, "seaweedfs_spec", broken_weed)
    settings = Settings(home=tmp_path, prefect_port=free_port(), s3_port=free_port())
    with pytest.raises(ServiceError) as error:
        services_up(settings, timeout=120)
    assert "seaweedfs exited with code 2 while starting" in str(error.value)
    assert "cannot open the data folder" in str(error.value)
    # Prefect came up first; it is stopped again rather than left running on its own.
    assert all(not s.running for s in services_status(settings))
    assert read_state(settings, "prefect") is None
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", settings.prefect_port)) != 0


def test_fer_up_stopped_while_it_starts_the_services_leaves_none_running(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    settings = Settings(home=tmp_path / "home", prefect_port=free_port(), s3_port=free_port())
    env = {
        **os.environ,
        "FER_HOME": str(settings.home),
        "FER_PREFECT_PORT": str(settings.prefect_port),
        "FER_S3_PORT": str(settings.s3_port),
    }
    fer = Path(sys.executable).with_name("fer")
    process = subprocess.Popen(
        ["bash", "-c", f'trap "" INT; exec {fer} up'],  # started from a script
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    # The Prefect server has been spawned and recorded: `up` is waiting for it to answer.
    while read_state(settings, "prefect") is None:
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "`fer up` never started the Prefect server"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130 and "stopped by SIGINT" in output, output[-3000:]
    assert all(not s.running for s in services_status(settings))
    assert read_state(settings, "prefect") is None
    assert not port_in_use(settings.prefect_port)  # the half-started server was stopped
