"""Task: score the trained model on the test split and report it in the Prefect UI."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_image_artifact, create_table_artifact

from model.contract import DatasetRef
from model.evaluation.metrics import CONFUSION_FILE, Metrics, evaluate_model
from model.registry.store import ModelRegistry
from model.training.config import CURVES_FILE, TrainResult
from tasks.common import retrying, settings


@task(
    name="evaluate_model",
    **retrying(2, first_delay_seconds=10),
    timeout_seconds=1800,
)
def evaluate_model_task(trained: TrainResult, ref: DatasetRef) -> Metrics:
    """Evaluate; metrics, per-class scores and the plots (from the store) become artifacts."""
    current = settings()
    metrics = evaluate_model(trained.model_path, ref, current.home_dir, trained.run_dir)
    create_table_artifact(
        key="test-metrics",
        table=[
            {"metric": "accuracy", "value": round(metrics.accuracy, 4)},
            {"metric": "macro F1", "value": round(metrics.macro_f1, 4)},
            {"metric": "expected calibration error", "value": _rounded(metrics.ece)},
            {"metric": "ECE uncalibrated", "value": _rounded(metrics.ece_uncalibrated)},
            {"metric": "test images", "value": metrics.n_test},
            {"metric": "scored runtime", "value": metrics.runtime},
            {"metric": "dataset fingerprint", "value": metrics.dataset_fingerprint[:12]},
        ],
        description="Test-split metrics of the challenger",
    )
    create_table_artifact(
        key="per-class-metrics",
        table=[{"class": name, **score.model_dump()} for name, score in metrics.per_class.items()],
        description="Per-class precision, recall, F1 and support on the test split",
    )
    registry = ModelRegistry.from_settings(current)
    for name, key, what in (
        (CONFUSION_FILE, "confusion-matrix", "Row-normalised confusion matrix on the test split"),
        (CURVES_FILE, "training-curves", "Loss and accuracy per epoch, train and validation"),
    ):
        path = trained.run_dir / name
        if path.exists():
            store_key = f"reports/{trained.run_dir.name}/{name}"
            uri = registry.upload_file(path, store_key)
            create_image_artifact(
                image_url=registry.presigned_url(store_key),
                key=key,
                description=f"{what} ({uri}; the link is valid 7 days)",
            )
    get_run_logger().info("test accuracy %.4f, macro F1 %.4f", metrics.accuracy, metrics.macro_f1)
    return metrics


def _rounded(value: float | None) -> float | str:
    return "-" if value is None else round(value, 4)
