"""Task: score the trained model on the test split and report it in the Prefect UI."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from model.dataset import DatasetRef
from model.evaluate import Metrics, evaluate_model
from model.train import TrainResult
from tasks.common import settings


@task(name="evaluate_model", timeout_seconds=1800)
def evaluate_model_task(trained: TrainResult, ref: DatasetRef) -> Metrics:
    """Evaluate; metrics and per-class scores become Prefect artifacts."""
    metrics = evaluate_model(trained.model_path, ref, settings().home_dir, trained.run_dir)
    create_markdown_artifact(
        key="test-metrics",
        markdown=(
            f"**test accuracy {metrics.accuracy:.4f}**, macro F1 {metrics.macro_f1:.4f} "
            f"on {metrics.n_test} images\n\nConfusion matrix: `{trained.run_dir}`"
        ),
        description="Test-split metrics of the challenger",
    )
    create_table_artifact(
        key="per-class-metrics",
        table=[{"class": name, **score.model_dump()} for name, score in metrics.per_class.items()],
        description="Per-class precision, recall, F1 and support on the test split",
    )
    get_run_logger().info("test accuracy %.4f", metrics.accuracy)
    return metrics
