"""Stop signals reach the platform's commands and their children whatever was inherited.

Each parent here is started the way a non-interactive shell starts a background job: with
SIGINT ignored (``trap "" INT`` then ``exec``), which Python then never turns into a
``KeyboardInterrupt`` by itself.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

#: A child with Python's own signal handling: it reports how it ended.
CHILD = textwrap.dedent(
    """
    import signal, sys, time
    ignore = sys.argv[1] == "ignore"
    if ignore:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("child ready", flush=True)
    try:
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt:
        print("child stopped cleanly", flush=True)
    """
)

#: The parent: a long-running command that runs the child in the foreground.
PARENT = textwrap.dedent(
    """
    import os, sys
    from infra.signals import run_in_foreground, stopping_on_signals
    with stopping_on_signals():
        code = run_in_foreground([sys.executable, "-c", sys.argv[1], sys.argv[2]], os.environ, 2)
    print(f"parent done {code}", flush=True)
    """
)


def _start_with_sigint_ignored(args: list[str], nohup: bool = False) -> subprocess.Popen[str]:
    """Start as a script's background job would; under ``nohup`` SIGHUP is ignored too.

    SIGHUP is set explicitly either way, so the test does not depend on how pytest itself
    was started (a shell cannot reset a signal that was ignored when it started).
    """
    hup = signal.SIG_IGN if nohup else signal.SIG_DFL
    command = shlex.join(args)
    return subprocess.Popen(
        ["bash", "-c", f'trap "" INT; exec {command}'],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, hup),
    )


def _read_until(process: subprocess.Popen[str], text: str) -> list[str]:
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if text in line:
            return lines
    pytest.fail(f"never printed {text!r}: {lines}")


@pytest.fixture
def child_script(tmp_path: Path) -> str:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return str(path)


def _parent(child_script: str, mode: str, nohup: bool = False) -> subprocess.Popen[str]:
    return _start_with_sigint_ignored(
        [sys.executable, "-c", PARENT, f"exec(open({child_script!r}).read())", mode], nohup
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_stops_parent_and_child_cleanly(child_script: str, signum: int) -> None:
    process = _parent(child_script, "default")
    _read_until(process, "child ready")
    process.send_signal(signum)
    output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
    # The child got exactly one SIGINT, its default reset although the parent inherited "ignore".
    assert output.splitlines() == ["child stopped cleanly", "parent done 0"], output


def test_under_nohup_a_hangup_is_ignored_and_a_stop_still_works(child_script: str) -> None:
    process = _parent(child_script, "default", nohup=True)
    _read_until(process, "child ready")
    process.send_signal(signal.SIGHUP)
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=1)  # still running: nohup asked for that
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    assert output.splitlines() == ["child stopped cleanly", "parent done 0"], output


def test_a_child_that_ignores_the_stop_is_killed_after_the_grace_period(
    child_script: str,
) -> None:
    process = _parent(child_script, "ignore")
    _read_until(process, "child ready")
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    assert output.splitlines()[-1] == "parent done 1", output
    assert "child stopped cleanly" not in output


def test_spawned_children_start_with_default_signals_where_ours_were_ignored() -> None:
    script = textwrap.dedent(
        """
        import signal, subprocess, sys
        from infra.signals import children_get_default_signals
        probe = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT))"]
        print("plain", subprocess.run(probe, capture_output=True, text=True).stdout.strip())
        with children_get_default_signals():
            reset = subprocess.run(probe, capture_output=True, text=True).stdout.strip()
        print("reset", reset)
        print("after", signal.getsignal(signal.SIGINT))
        """
    )
    process = _start_with_sigint_ignored([sys.executable, "-c", script])
    output, _ = process.communicate(timeout=30)
    assert output.splitlines() == [
        "plain 1",  # SIG_IGN
        "reset <built-in function default_int_handler>",
        "after 1",  # this process keeps what it inherited (SIG_IGN)
    ], output
