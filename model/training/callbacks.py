"""Training callbacks: a time-budgeted learning-rate plan that survives a restart."""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

logger = logging.getLogger(__name__)


def plan_epochs(max_epochs: int, done: int, seconds: list[float], budget: float | None) -> int:
    """How many epochs the run will have in total, given the time spent so far.

    Args:
        max_epochs: the configured maximum.
        done: epochs finished.
        seconds: duration of each finished epoch.
        budget: training seconds allowed in total, or None for no limit.

    Returns:
        ``max_epochs`` without a budget or before any epoch was timed; else the finished
        epochs plus as many typical epochs as fit in the remaining budget (at least ``done``,
        at most ``max_epochs``). The first epoch (graph tracing) is left out of the typical
        duration once there are others.
    """
    if budget is None or not seconds:
        return max_epochs
    typical = statistics.median(seconds[1:] or seconds)
    remaining = budget - sum(seconds)
    return max(done, min(max_epochs, done + int(remaining // typical)))


@dataclass(frozen=True)
class EpochProgress:
    """Where a training run stands after an epoch: what progress displays are given."""

    epoch: int
    planned: int
    metrics: dict[str, float]
    elapsed_seconds: float
    remaining_seconds: float

    @property
    def fraction(self) -> float:
        """Share of the planned epochs done (0..1)."""
        return min(self.epoch / max(self.planned, 1), 1.0)

    def summary(self) -> str:
        """One line: ``epoch 3/12: accuracy 0.5120, val_accuracy 0.4980, 2:10 left``."""
        shown = [
            f"{name} {self.metrics[name]:.4f}"
            for name in ("accuracy", "val_accuracy")
            if name in self.metrics
        ]
        minutes, seconds = divmod(round(self.remaining_seconds), 60)
        left = f"{minutes}:{seconds:02d} left"
        return f"epoch {self.epoch}/{self.planned}: {', '.join([*shown, left])}"


ProgressListener = Callable[[EpochProgress], None]


def learning_rate_at(progress: float, peak: float, warmup: float, schedule: str) -> float:
    """The learning rate at ``progress`` (0..1) of the planned training.

    Args:
        progress: fraction of planned steps done.
        peak: the peak learning rate.
        warmup: fraction of planned steps spent warming up linearly from 0.
        schedule: ``constant`` or ``cosine`` (decay to 0 after the warm-up).

    Returns:
        The learning rate.
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return peak * progress / warmup
    if schedule == "constant":
        return peak
    rest = (progress - warmup) / max(1.0 - warmup, 1e-9)
    return peak * 0.5 * (1.0 + math.cos(math.pi * rest))


class TrainingPlan(keras.callbacks.Callback):
    """Sets the learning rate each epoch, keeps to the time budget, and logs each epoch.

    Its state (epoch durations, per-epoch metrics, best validation accuracy) is written to
    ``state_path`` after every epoch, so a resumed run (``keras.callbacks.BackupAndRestore``)
    continues the same plan, budget and history.
    """

    def __init__(
        self,
        *,
        max_epochs: int,
        peak: float,
        warmup_epochs: float,
        schedule: str,
        budget_seconds: float | None,
        state_path: Path,
        listeners: tuple[ProgressListener, ...] = (),
    ) -> None:
        """Create the plan.

        Args:
            max_epochs: configured maximum epochs.
            peak: peak learning rate.
            warmup_epochs: warm-up length in epochs.
            schedule: ``constant`` or ``cosine``.
            budget_seconds: training time allowed across resumes, or None.
            state_path: JSON file holding the plan's state between restarts.
            listeners: called with an :class:`EpochProgress` after each epoch (progress
                bars, Prefect artifacts); an exception in one is logged, not raised.
        """
        super().__init__()
        self.max_epochs = max_epochs
        self.peak = peak
        self.warmup_epochs = warmup_epochs
        self.schedule = schedule
        self.budget = budget_seconds
        self.state_path = state_path
        self.listeners = listeners
        self.state: dict[str, Any] = {"seconds": [], "history": [], "best": None}
        if state_path.exists():
            self.state = json.loads(state_path.read_text())
        self.planned = plan_epochs(
            max_epochs, len(self.state["seconds"]), self.state["seconds"], budget_seconds
        )
        self._epoch = 0
        self._started = 0.0

    @property
    def best(self) -> float | None:
        """Best validation accuracy so far (across resumes)."""
        return self.state["best"]

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch metrics so far (across resumes), by metric name."""
        names = sorted({k for epoch in self.state["history"] for k in epoch})
        return {
            k: [float(epoch.get(k, float("nan"))) for epoch in self.state["history"]] for k in names
        }

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Set this epoch's learning rate from the plan (at the epoch's midpoint).

        Per epoch rather than per step: a batch-level hook is called from Python between
        compiled steps, which every backend pays for.
        """
        self._epoch = epoch
        self._started = time.perf_counter()
        planned = max(self.planned, 1)
        rate = learning_rate_at(
            (epoch + 0.5) / planned, self.peak, self.warmup_epochs / planned, self.schedule
        )
        self.model.optimizer.learning_rate.assign(rate)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Record the epoch, re-plan from its duration, save the state, stop at the plan's end."""
        logs = {k: float(v) for k, v in (logs or {}).items()}
        seconds = time.perf_counter() - self._started
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        logs["epoch_seconds"] = seconds  # training and validation, for throughput figures
        self.state["seconds"].append(seconds)
        self.state["history"].append(logs)
        accuracy = logs.get("val_accuracy")
        if accuracy is not None and (self.best is None or accuracy > self.best):
            self.state["best"] = accuracy
        done = len(self.state["seconds"])
        self.planned = plan_epochs(self.max_epochs, done, self.state["seconds"], self.budget)
        self.state_path.write_text(json.dumps(self.state))
        scores = ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()))
        logger.info("epoch %d/%d (%.0f s): %s", done, self.planned, seconds, scores)
        self._tell(done, logs)
        if done >= self.planned:
            if done < self.max_epochs:
                logger.info(
                    "stopping after %d epochs: the next would end past the %.0f-minute budget",
                    done,
                    (self.budget or 0) / 60,
                )
            self.model.stop_training = True

    def _tell(self, done: int, logs: dict[str, float]) -> None:
        """Give each listener the run's progress; a failing display never stops training."""
        seconds = self.state["seconds"]
        typical = statistics.median(seconds[1:] or seconds)
        progress = EpochProgress(
            epoch=done,
            planned=self.planned,
            metrics=logs,
            elapsed_seconds=sum(seconds),
            remaining_seconds=max(self.planned - done, 0) * typical,
        )
        for listener in self.listeners:
            try:
                listener(progress)
            except Exception:
                logger.warning("progress listener %r failed", listener, exc_info=True)
