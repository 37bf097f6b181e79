"""Waiting for a freshly spawned service: liveness comes from the process handle."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from infra.services import ServiceState, spawn_service, stop_service, wait_for_health, wait_or_stop
from model.errors import ServiceError
from model.settings import Settings

pytestmark = pytest.mark.unit


def _state(name: str, pid: int, command: list[str]) -> ServiceState:
    return ServiceState(name, pid, 1, "http://127.0.0.1:1", command, started_at=time.time())


def test_a_spawned_service_is_alive_while_proc_does_not_name_it_yet(tmp_path: Path) -> None:
    # /proc/<pid>/cmdline reads empty while exec is still in progress; the recorded command
    # then matches nothing, as here, and must not be taken for an exit.
    settings = Settings(home=tmp_path)
    command = [sys.executable, "-c", "import time; time.sleep(30)"]
    process = spawn_service(settings, "svc", command, {})
    state = _state("svc", process.pid, ["weed", "mini"])
    answers = iter([False, False, True])
    try:
        wait_for_health(lambda: next(answers), state, settings, timeout=30, process=process)
        assert process.poll() is None
    finally:
        stop_service(_state("svc", process.pid, command), grace=5)
        process.wait(timeout=10)


def test_an_exit_during_startup_gives_the_code_and_the_log(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    command = [sys.executable, "-c", "import sys; print('no data dir'); sys.exit(3)"]
    process = spawn_service(settings, "svc", command, {})
    state = _state("svc", process.pid, command)
    with pytest.raises(ServiceError) as error:
        wait_or_stop(lambda: False, state, settings, timeout=30, process=process)
    message = str(error.value)
    assert "svc exited with code 3 while starting" in message
    assert "no data dir" in message
    assert process.returncode == 3, "the exited process is reaped, not left a zombie"


def test_a_service_that_never_answers_is_stopped(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    process = spawn_service(settings, "svc", command, {})
    state = _state("svc", process.pid, command)
    with pytest.raises(ServiceError, match="did not become healthy"):
        wait_or_stop(lambda: False, state, settings, timeout=1, process=process)
    assert process.wait(timeout=15) is not None
