"""Evaluation on the test split: accuracy, per-class metrics and the confusion matrix."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from model.dataset import CLASSES, DatasetRef, arrays_dir, load_split
from model.predict import load_keras_model

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"


class ClassMetrics(BaseModel):
    """Precision, recall, F1 and support of one class."""

    model_config = ConfigDict(frozen=True)

    precision: float
    recall: float
    f1: float
    support: int


class Metrics(BaseModel):
    """Test-split metrics of one model; small enough to pass between tasks."""

    model_config = ConfigDict(frozen=True)

    accuracy: float
    macro_f1: float
    n_test: int
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]
    dataset_fingerprint: str


def compute_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, fingerprint: str, classes: Sequence[str] = CLASSES
) -> Metrics:
    """Score predictions with ``sklearn.metrics``.

    Args:
        y_true: true label indices.
        y_pred: predicted label indices.
        fingerprint: fingerprint of the dataset the labels come from.
        classes: class names in label-index order.

    Returns:
        Accuracy, macro F1, per-class metrics and the confusion matrix (rows: true class).
    """
    labels = list(range(len(classes)))
    report = classification_report(
        y_true,
        y_pred,
        labels=labels,
        target_names=list(classes),
        output_dict=True,
        zero_division=0,
    )
    per_class = {
        name: ClassMetrics(
            precision=report[name]["precision"],
            recall=report[name]["recall"],
            f1=report[name]["f1-score"],
            support=int(report[name]["support"]),
        )
        for name in classes
    }
    return Metrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        n_test=int(len(y_true)),
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        dataset_fingerprint=fingerprint,
    )


def plot_confusion(metrics: Metrics, path: Path, classes: Sequence[str] = CLASSES) -> Path:
    """Draw the row-normalised confusion matrix as a PNG.

    Args:
        metrics: metrics holding the confusion matrix.
        path: where to write the PNG.
        classes: class names in label-index order.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    counts = np.array(metrics.confusion, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(6.5, 5.5))
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"accuracy {metrics.accuracy:.3f} on {metrics.n_test} test images")
    for (row, col), share in np.ndenumerate(shares):
        axes.text(
            col,
            row,
            f"{share:.2f}",
            ha="center",
            va="center",
            color="white" if share > 0.5 else "black",
            fontsize=8,
        )
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def evaluate_model(model_path: Path, ref: DatasetRef, home: Path, out_dir: Path) -> Metrics:
    """Score a saved model on the dataset's ``test/`` split and write metrics and plot.

    Args:
        model_path: a ``.keras`` file.
        ref: the dataset.
        home: platform home (array cache).
        out_dir: where ``metrics.json`` and ``confusion_matrix.png`` go.

    Returns:
        The metrics.
    """
    x, y = load_split(ref, "test", arrays_dir(home))
    model = load_keras_model(model_path)
    probabilities = model.predict(x.astype("float32"), batch_size=512, verbose=0)
    metrics = compute_metrics(y, np.argmax(probabilities, axis=1), ref.fingerprint)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics.model_dump(), indent=2))
    plot_confusion(metrics, out_dir / CONFUSION_FILE)
    logger.info("test accuracy %.4f on %d images", metrics.accuracy, metrics.n_test)
    return metrics
