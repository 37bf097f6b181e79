"""Task: train a model on the dataset's train split."""

from __future__ import annotations

from prefect import get_run_logger, task

from model.dataset import DatasetRef
from model.train import TrainConfig, TrainResult, train_model
from tasks.common import settings


@task(name="train_model", timeout_seconds=6 * 3600)
def train_model_task(ref: DatasetRef, config: TrainConfig) -> TrainResult:
    """Train and save the model; returns paths, not the model."""
    platform = settings()
    result = train_model(ref, config, platform.home_dir, platform.distribute)
    get_run_logger().info(
        "trained %d epochs, best validation accuracy %.4f, model at %s",
        result.epochs_run,
        result.best_val_accuracy,
        result.model_path,
    )
    return result
