"""Task: train a model on the dataset's train split, with its progress in the Prefect UI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from model.contract import DatasetRef
from model.data.cleaning import Cleaned
from model.registry.lineage import find_parent
from model.registry.store import ModelRegistry
from model.training.config import TrainConfig, TrainResult
from model.training.fit import train_model
from tasks.common import settings

if TYPE_CHECKING:  # model.training.callbacks imports Keras, which the training itself loads later
    from model.training.callbacks import EpochProgress

#: Key of the progress artifact that moves each epoch (``fer up`` and ``fer retrain`` follow it).
PROGRESS_KEY = "training-progress"


@task(name="train_model", timeout_seconds=6 * 3600)
def train_model_task(
    ref: DatasetRef, config: TrainConfig, cleaned: Cleaned | None = None
) -> TrainResult:
    """Train on what the clean step kept and save the model; returns paths, not the model.

    Each epoch moves the ``training-progress`` artifact and writes one log line; with
    ``config.warm_start`` the current champion is looked up as the parent.
    """
    platform = settings()
    logger = get_run_logger()
    parent, reason = None, "warm start is off in this training config"
    if config.warm_start:
        registry = ModelRegistry.from_settings(platform)
        parent, reason = find_parent(registry, config.network, platform.home_dir / "parents")
    artifact = create_progress_artifact(progress=0.0, key=PROGRESS_KEY, description="starting")

    def report(progress: EpochProgress) -> None:
        update_progress_artifact(
            artifact, progress=100 * progress.fraction, description=progress.summary()
        )
        logger.info("%s", progress.summary())

    result = train_model(
        ref,
        config,
        platform.home_dir,
        platform.distribute,
        listeners=(report,),
        parent=parent,
        no_parent_reason=reason,
        cleaned=cleaned,
    )
    best = result.best_val_accuracy
    done = f"done after {result.epochs_run} epochs, best val_accuracy {best:.4f}"
    update_progress_artifact(artifact, progress=100.0, description=done)
    logger.info(
        "trained %d epochs, best validation accuracy %.4f, model at %s",
        result.epochs_run,
        result.best_val_accuracy,
        result.model_path,
    )
    if result.warm_start is not None:
        logger.info("warm start: %s", result.warm_start.reason)
    return result
