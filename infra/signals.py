"""Stopping on SIGINT and SIGTERM, whatever signal disposition a process inherited.

A process started with SIGINT ignored (a background job of a non-interactive shell, its
children, a container's PID 1) gets no ``KeyboardInterrupt`` from Python, and ``exec`` keeps an
ignored signal ignored in every child it starts. A process that *handles* a signal instead passes
the default on to its children, since ``exec`` resets handled signals. So the long-running
commands handle both signals themselves, and spawning resets an inherited "ignore" for the
child's sake.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

#: The signals that ask a platform process to stop: Ctrl-C, service managers' stop, and a
#: closed terminal (unless ``nohup`` ignores it).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: What ``signal.signal`` accepts and returns.
Handler = Callable[[int, FrameType | None], Any] | int | None


class Stop(KeyboardInterrupt):
    """Raised in the main thread when a stop signal arrives.

    A ``KeyboardInterrupt``, so whatever already shuts down cleanly on Ctrl-C (Gradio's server
    loop, Prefect's flow engine) does the same on SIGTERM.

    Attributes:
        signum: the signal that asked for the stop.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signum)


def _in_main_thread() -> bool:
    # Python delivers signals to, and lets only, the main thread set handlers.
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _handled(signums: Sequence[int], handler: Handler) -> Iterator[None]:
    """Handle ``signums`` with ``handler`` inside the block, then restore what was there.

    Outside the main thread (an embedding program owns its signals there) nothing changes.
    """
    previous: dict[int, Handler] = {}
    if _in_main_thread():
        previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


def stopping_on_signals() -> AbstractContextManager[None]:
    """Raise :class:`Stop` in the main thread on SIGINT, SIGTERM or SIGHUP inside the block.

    SIGINT and SIGTERM are handled even if they were inherited ignored; SIGHUP only if it was
    not (``nohup`` asks for a process that outlives its terminal). The previous handlers are
    back after the block.
    """
    nohup = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    return _handled([s for s in STOP_SIGNALS if not (nohup and s == signal.SIGHUP)], _raise_stop)


def _still_ignored(signum: int, frame: FrameType | None) -> None:
    """Handles an ignored stop signal while a child is spawned: it stays without effect here."""


def children_get_default_signals() -> AbstractContextManager[None]:
    """Processes spawned inside start with SIGINT and SIGTERM at their defaults.

    Where this process inherited them ignored, they are briefly handled (without effect) so that
    ``exec`` resets them in the child; the child can then be stopped as its own code intends.
    An ignored SIGHUP stays ignored: that is ``nohup``'s wish.
    """
    ignored = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) == signal.SIG_IGN]
    return _handled(ignored, _still_ignored)


def stop_child(process: subprocess.Popen[bytes], grace: float) -> int:
    """Ask a child to stop with SIGINT; kill it if it is still running after ``grace`` seconds.

    A second stop signal while waiting kills it at once, as a second Ctrl-C does.

    Returns:
        0 if it stopped by itself within the grace period, 1 if it had to be killed.
    """
    if process.poll() is not None:
        return 0
    logger.info("stopping pid %d (SIGINT, up to %.0f s)", process.pid, grace)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace)
        return 0
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        logger.warning("pid %d did not stop within %.0f s; killing it", process.pid, grace)
        process.kill()
        process.wait()
        return 1


def run_in_foreground(command: Sequence[str], env: Mapping[str, str], grace: float = 20.0) -> int:
    """Run a command until it ends or this process is asked to stop, then stop it cleanly.

    The child runs in its own process group, so a terminal's Ctrl-C reaches this process only
    and the child gets exactly one SIGINT from :func:`stop_child`: a second one would make a
    Prefect worker kill itself instead of shutting down.

    Args:
        command: the program and its arguments.
        env: its whole environment.
        grace: seconds the child has to stop after SIGINT before it is killed.

    Returns:
        The child's exit code if it ended by itself; :func:`stop_child`'s result if stopped.
    """
    process = None
    try:
        with children_get_default_signals():
            process = subprocess.Popen(
                list(command), env=dict(env), stdin=subprocess.DEVNULL, process_group=0
            )
        return process.wait()
    except KeyboardInterrupt:
        if process is None:
            raise
        return stop_child(process, grace)
