"""Following a retrain from the terminal: the stage it is in and its training progress.

The run may be in this process (``fer retrain``) or in a worker (``fer up``); either way the
terminal reads what the Prefect server knows: the running task (the stage) and the training
task's ``training-progress`` artifact (epoch n of N, accuracies, time left). On a terminal a
``tqdm`` bar shows the training; otherwise each change is one line.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator
from typing import TextIO
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from tqdm import tqdm

from tasks.train import PROGRESS_KEY


class ProgressDisplay:
    """Shows stage changes and training progress on a stream: a bar on a TTY, else lines."""

    def __init__(self, out: TextIO, epoch_lines: bool = True) -> None:
        """Create the display.

        Args:
            out: where to write (a bar when it is a terminal).
            epoch_lines: without a terminal, print each training progress change as a line
                (off where the run's own log lines already reach ``out``).
        """
        self.out = out
        self.tty = out.isatty()
        self.epoch_lines = epoch_lines
        self.stage: str | None = None
        self.training: str | None = None
        self.bar: tqdm | None = None

    def show(self, stage: str | None, percent: float | None, description: str | None) -> None:
        """Render what the run is doing now (only what changed)."""
        if stage and stage != self.stage:
            self.stage = stage
            self._line(f"stage: {stage}")
        if percent is None or description is None or description == self.training:
            return
        self.training = description
        if self.tty:
            if self.bar is None:
                self.bar = tqdm(total=100, file=self.out, desc="training", unit="%")
            self.bar.n = round(percent, 1)
            self.bar.set_postfix_str(description)
        elif self.epoch_lines:
            self._line(f"training: {description}")

    def close(self) -> None:
        """Finish the bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)


def _stage(client: SyncPrefectClient, flow_run_id: UUID) -> str | None:
    """The task the run is in now (e.g. ``train_model``), or None between tasks."""
    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )
    running = [run for run in runs if run.state is not None and run.state.is_running()]
    if not running:
        return None
    # Task run names are "<task name>-<suffix>".
    return running[-1].name.rsplit("-", 1)[0]


def _training(client: SyncPrefectClient, flow_run_id: UUID) -> tuple[float | None, str | None]:
    """The latest ``training-progress`` artifact of the run: (percent, description)."""
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            type=ArtifactFilterType(any_=["progress"]),
        ),
        sort=ArtifactSort.UPDATED_DESC,
        limit=5,
    )
    for artifact in artifacts:
        if artifact.key == PROGRESS_KEY:
            return float(artifact.data), artifact.description
    return None, None


def follow_flow_run(
    flow_run_id: UUID,
    display: ProgressDisplay,
    poll_seconds: float = 2.0,
    stop: threading.Event | None = None,
) -> FlowRun:
    """Show a flow run's stage and training progress until it ends (or ``stop`` is set).

    Args:
        flow_run_id: the run.
        display: where to show it.
        poll_seconds: how often to ask the server.
        stop: set to stop following early (after one last look).

    Returns:
        The run as last read (final unless stopped early).
    """
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            display.show(_stage(client, flow_run_id), *_training(client, flow_run_id))
            if (run.state is not None and run.state.is_final()) or (stop and stop.is_set()):
                return run
            if stop is not None:
                stop.wait(poll_seconds)
            else:
                time.sleep(poll_seconds)


def _find_tagged_run(tag: str, stop: threading.Event, poll_seconds: float) -> UUID | None:
    """Wait for the flow run carrying ``tag`` to exist; None when stopped first."""
    with get_client(sync_client=True) as client:
        while True:
            stopping = stop.is_set()  # read first: a run that ended meanwhile is still found
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])),
                sort=FlowRunSort.START_TIME_DESC,
                limit=1,
            )
            if runs:
                return runs[0].id
            if stopping:
                return None
            stop.wait(poll_seconds)


@contextlib.contextmanager
def following_tagged_run(
    tag: str, display: ProgressDisplay, poll_seconds: float = 2.0
) -> Iterator[None]:
    """Follow the flow run tagged ``tag`` in a background thread while the body runs.

    For a run in this process (``fer retrain``): the body starts the flow under
    ``prefect.tags(tag)``; the display shows its stages and training progress, with a last
    look once the body returns.

    Args:
        tag: a tag unique to this run.
        display: where to show it.
        poll_seconds: how often to ask the server.
    """
    stop = threading.Event()

    def watch() -> None:
        with contextlib.suppress(Exception):  # a display problem never fails the run
            flow_run_id = _find_tagged_run(tag, stop, poll_seconds)
            if flow_run_id is not None:
                follow_flow_run(flow_run_id, display, poll_seconds, stop)

    # A copy of this context: Prefect's temporary settings (the API URL) are context
    # variables, which a new thread would not see.
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(watch,), name="fer-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        display.close()
