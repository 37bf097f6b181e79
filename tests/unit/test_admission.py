"""The API's admission: a few requests analysed at once, a bounded queue, then 429."""

from __future__ import annotations

import threading
import time

import pytest

from serving.api import Admission

pytestmark = pytest.mark.unit


def test_admission_refuses_only_past_the_running_and_waiting_places() -> None:
    gate = Admission(running=1, waiting=1)
    assert gate.enter()  # runs
    second = threading.Thread(target=gate.enter)  # waits for the turn
    second.start()
    deadline = time.monotonic() + 5
    while gate.admitted < 2:  # the second one is queued
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not gate.enter()  # a third: the queue is full
    gate.leave()
    second.join(timeout=5)
    assert not second.is_alive()
    gate.leave()
    assert gate.enter()
