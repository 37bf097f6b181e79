"""Evaluation on the test split: accuracy, per-class metrics and the confusion matrix."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from model.contract import CLASSES, IMAGE_SUFFIXES, DatasetRef
from model.data.dataset import arrays_dir, load_split
from model.errors import DatasetError
from model.inference.predictor import load_keras_model
from model.training.calibration import expected_calibration_error, softmax

if TYPE_CHECKING:
    import keras

    from model.inference.tflite import TFLiteRunner

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
    ece: float | None = None
    ece_uncalibrated: float | None = None
    runtime: str = "keras"


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


def _predict(model: keras.Model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities and, where the model has a ``logits`` layer, logits: one forward pass."""
    import keras

    if "logits" not in {layer.name for layer in model.layers}:
        return np.asarray(model.predict(pixels, batch_size=512, verbose=0)), None
    both = keras.Model(model.input, [model.output, model.get_layer("logits").output])
    probabilities, logits = both.predict(pixels, batch_size=512, verbose=0)
    return np.asarray(probabilities), np.asarray(logits)


def evaluate_model(model_path: Path, ref: DatasetRef, home: Path, out_dir: Path) -> Metrics:
    """Score a saved model on the dataset's ``test/`` split and write metrics and plot.

    What serves is what is scored: the ``serving.tflite`` export beside the model when there
    is one (see :func:`load_scored`).

    Args:
        model_path: a ``.keras`` file.
        ref: the dataset.
        home: platform home (array cache).
        out_dir: where ``metrics.json`` and ``confusion_matrix.png`` go.

    Returns:
        The metrics.
    """
    x, y = load_split(ref, "test", arrays_dir(home))
    metrics = score_model(*load_scored(model_path), x, y, ref.fingerprint)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics.model_dump(), indent=2))
    plot_confusion(metrics, out_dir / CONFUSION_FILE)
    logger.info("test accuracy %.4f on %d images", metrics.accuracy, metrics.n_test)
    return metrics


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from model.inference.predictor import to_model_input

    try:
        with Image.open(path) as image:
            return to_model_input(image)
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetError(
            f"{path} is not a readable image ({error}); remove or replace it"
        ) from error


def _label_index(value: str, where: str, classes: Sequence[str]) -> int:
    text = value.strip().lower()
    if text in classes:
        return classes.index(text)
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    raise DatasetError(
        f"{where}: label {value!r} is neither a class name ({', '.join(classes)}) nor an index "
        f"0-{len(classes) - 1}"
    )


def load_labelled_images(
    source: Path, classes: Sequence[str] = CLASSES
) -> tuple[np.ndarray, np.ndarray]:
    """Read labelled images from a folder in FER layout or a CSV of paths and labels.

    Accepted: ``DIR/<class>/*``, ``DIR/test/<class>/*`` (the test split is taken), or a CSV
    with a header whose columns include a path (``path``, ``image``, ``file`` or
    ``filename``; relative to the CSV's folder) and a label (``label``, ``emotion`` or
    ``class``; a class name or an index). Images of any size and mode are converted to
    48x48 gray.

    Args:
        source: the folder or CSV file.
        classes: class names in label-index order.

    Returns:
        ``(x, y)``: uint8 images N x 48 x 48 x 1 and label indices.

    Raises:
        DatasetError: if the source is missing, empty or malformed; the message says which.
    """
    classes = [c.lower() for c in classes]
    if source.is_file() and source.suffix.lower() == ".csv":
        items = _csv_items(source, classes)
    elif source.is_dir():
        items = _folder_items(source, classes)
    else:
        raise DatasetError(
            f"{source} is neither a folder (DIR/<class>/* or DIR/test/<class>/*) nor a .csv file"
        )
    if not items:
        raise DatasetError(f"no labelled images found in {source}")
    x = np.stack([_read_image(path) for path, _ in items])
    return x, np.array([label for _, label in items], dtype=np.int64)


def _csv_items(source: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(image path, label index) of each row of a CSV with a path and a label column."""
    import csv

    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = {name.strip().lower(): name for name in reader.fieldnames or []}
        path_key = next(
            (fields[k] for k in ("path", "image", "file", "filename") if k in fields), None
        )
        label_key = next((fields[k] for k in ("label", "emotion", "class") if k in fields), None)
        if path_key is None or label_key is None:
            raise DatasetError(
                f"{source} needs a header with a path column (path/image/file/filename) and "
                f"a label column (label/emotion/class); found {list(fields)}"
            )
        rows = [(row[path_key], row[label_key], n) for n, row in enumerate(reader, start=2)]
    return [
        (source.parent / path, _label_index(label, f"{source}:{line}", classes))
        for path, label, line in rows
    ]


def _folder_items(source: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(image path, label index) of each image in ``<class>/`` folders (of ``test/`` if any)."""
    root = source / "test" if (source / "test").is_dir() else source
    return [
        (path, classes.index(folder.name.lower()))
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        if folder.name.lower() in classes
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]


def load_scored(model_path: Path) -> tuple[keras.Model, TFLiteRunner | None]:
    """The Keras model and, when ``serving.tflite`` lies beside it, the export that serves.

    Args:
        model_path: a ``.keras`` file.

    Returns:
        ``(keras model, export runner or None)``, the arguments :func:`score_model` takes.
    """
    from model.contract import TFLITE_FILE
    from model.inference.tflite import TFLiteRunner

    exported = model_path.with_name(TFLITE_FILE)
    runner = TFLiteRunner(exported, threads=os.cpu_count()) if exported.is_file() else None
    return load_keras_model(model_path), runner


def score_model(
    model: keras.Model,
    served: TFLiteRunner | None,
    x: np.ndarray,
    y: np.ndarray,
    source: str,
) -> Metrics:
    """Metrics of a loaded model on labelled images (no files written).

    Args:
        model: a Keras model from raw pixels to probabilities.
        served: its TFLite export, or None; when given, the metrics and the calibration
            error are the export's (what serving returns) and only the uncalibrated
            error comes from the Keras logits.
        x: uint8 images N x 48 x 48 x 1.
        y: label indices.
        source: what the images are (recorded as the fingerprint field).

    Returns:
        Accuracy, macro F1, per-class metrics, confusion matrix, calibration errors and the
        runtime scored.
    """
    pixels = np.asarray(x, dtype=np.float32)
    probabilities, logits = _predict(model, pixels)
    if served is not None:
        probabilities = np.concatenate(
            [served(pixels[i : i + 512]) for i in range(0, len(pixels), 512)]
        )
    metrics = compute_metrics(y, np.argmax(probabilities, axis=1), source)
    return metrics.model_copy(
        update={
            "ece": expected_calibration_error(probabilities, y),
            "ece_uncalibrated": None
            if logits is None
            else expected_calibration_error(softmax(logits), y),
            "runtime": "keras" if served is None else "tflite",
        }
    )
