"""Import an externally trained model (a GPU run, say) as a normal, gated model version.

The model goes the way a retrain's does: safe-mode load, TFLite export checked against
Keras, evaluation on the configured dataset's test split, the same gate (floors and the
champion on the same test data), then publish and promote. It must come with the
``manifest.json`` its training run wrote beside it (``bench/device_train.py`` writes one),
whose dataset fingerprint must be the configured dataset's.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from model.contract import CLASSES, IMAGE_SIZE, MODEL_FILE, TFLITE_FILE, DatasetRef
from model.data.dataset import arrays_dir, load_split
from model.errors import ImportRefused
from model.evaluation.gate import Decision, GateConfig, decide, enforce
from model.evaluation.metrics import Metrics, evaluate_model
from model.files import sha256_file
from model.inference.predictor import load_keras_model
from model.registry.champion import score_champion
from model.registry.lineage import publish_run
from model.training.config import (
    CURVES_FILE,
    EXPORT_CHECK_IMAGES,
    HISTORY_FILE,
    TrainConfig,
    TrainResult,
)
from model.training.export import export_tflite
from model.training.fit import new_run_dir, plot_curves
from model.training.network import fold_served_model

if TYPE_CHECKING:
    import keras

    from model.registry.store import ModelRegistry

logger = logging.getLogger(__name__)

#: The training record an imported model must have beside it.
RECORD_FILE = "manifest.json"


@dataclass(frozen=True)
class ImportedModel:
    """What an import published."""

    version: str
    metrics: Metrics
    decision: Decision


def read_training_record(model_path: Path) -> dict[str, Any]:
    """The ``manifest.json`` a training run wrote beside its model, checked for what we need.

    Args:
        model_path: the ``.keras`` file.

    Returns:
        The record: ``dataset.fingerprint``, ``train_config`` and ``training`` at least.

    Raises:
        ImportRefused: if the record is missing, not JSON, or lacks a field.
    """
    path = model_path.with_name(RECORD_FILE)
    if not path.is_file():
        raise ImportRefused(
            f"{path} not found: an imported model needs the {RECORD_FILE} its training run "
            "wrote beside it (dataset fingerprint, train config, hardware); "
            "bench/device_train.py writes one"
        )
    needs = "dataset.fingerprint, train_config and training, as bench/device_train.py writes"
    try:
        record = json.loads(path.read_text())
        fingerprint = record["dataset"]["fingerprint"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ImportRefused(
            f"{path} is not a training record ({type(error).__name__}: {error}); it needs {needs}"
        ) from error
    missing = [key for key in ("train_config", "training") if key not in record]
    if not isinstance(fingerprint, str) or not fingerprint:
        missing.insert(0, "dataset.fingerprint")
    if missing:
        raise ImportRefused(f"{path} lacks {', '.join(missing)}; it needs {needs}")
    return record


def load_importable(model_path: Path) -> keras.Model:
    """Load a model file in safe mode and check it maps 48x48x1 pixels to the classes.

    Args:
        model_path: the ``.keras`` file.

    Returns:
        The model.

    Raises:
        ImportRefused: if the file is not a Keras model, safe mode refuses it (a ``Lambda``
            layer or another unknown class), or its input or output shape is wrong.
    """
    if not model_path.is_file():
        raise ImportRefused(f"{model_path} does not exist")
    if not zipfile.is_zipfile(model_path):
        raise ImportRefused(
            f"{model_path} is not a Keras model file (a .keras zip archive); export the model "
            "with model.save('model.keras')"
        )
    try:
        model = load_keras_model(model_path)
    except Exception as error:  # Keras raises ValueError, TypeError, KeyError, OSError...
        safe_mode = "safe_mode" in str(error) or "Lambda" in str(error)
        why = (
            "safe mode refused it: it holds a Lambda layer or other code that would run on "
            "load; rebuild the model from the platform's layers"
            if safe_mode
            else f"it cannot be loaded as a Keras model ({type(error).__name__}: {error})"
        )
        raise ImportRefused(f"{model_path}: {why}") from error
    expected_in, expected_out = (None, IMAGE_SIZE, IMAGE_SIZE, 1), (None, len(CLASSES))
    if tuple(model.input_shape) != expected_in or tuple(model.output_shape) != expected_out:
        raise ImportRefused(
            f"{model_path} maps {model.input_shape} to {model.output_shape}; the platform "
            f"serves models from {expected_in} pixels to {expected_out} probabilities "
            f"({', '.join(CLASSES)})"
        )
    return model


def _train_config(record: dict[str, Any], model_path: Path) -> TrainConfig:
    try:
        return TrainConfig.model_validate(record["train_config"])
    except pydantic.ValidationError as error:
        raise ImportRefused(
            f"{model_path.with_name(RECORD_FILE)}: train_config is not a valid TrainConfig "
            f"of this code version ({error.error_count()} error(s): {error.errors()[0]['msg']})"
        ) from error


def _prepare_run(
    model: keras.Model, config: TrainConfig, record: dict[str, Any], ref: DatasetRef, home: Path
) -> Path:
    """A run directory like a retrain's: the model (float32), its export, history and curves."""
    run_dir = new_run_dir(home)
    model.save(run_dir / MODEL_FILE)
    pixels, _ = load_split(ref, "train", arrays_dir(home))
    export_tflite(
        _fast_equivalent(model, config),
        run_dir / TFLITE_FILE,
        pixels[:EXPORT_CHECK_IMAGES],
        reference=model,
        quantize=True,
    )
    history = record["training"].get("history", {})
    (run_dir / HISTORY_FILE).write_text(json.dumps(history, indent=2))
    plot_curves(history, run_dir / CURVES_FILE)
    return run_dir


def _fast_equivalent(model: keras.Model, config: TrainConfig) -> keras.Model:
    """The model with BatchNorm folded, as a retrain exports it; the model itself if that fails.

    The export is checked against ``model`` either way, so a fold that went wrong is caught.
    """
    try:
        return fold_served_model(model, config.network, (IMAGE_SIZE, IMAGE_SIZE, 1), config.seed)
    except (ValueError, KeyError, AttributeError) as error:
        logger.warning(
            "cannot fold BatchNorm of the imported model (%s); exporting it as is", error
        )
        return model


def _trained(run_dir: Path, record: dict[str, Any]) -> TrainResult:
    training = record["training"]
    tflite = run_dir / TFLITE_FILE
    return TrainResult(
        run_dir=run_dir,
        model_path=run_dir / MODEL_FILE,
        history_path=run_dir / HISTORY_FILE,
        epochs_run=int(training.get("epochs_run", 0)),
        best_val_accuracy=float(training.get("best_val_accuracy", 0.0)),
        temperature=float(training.get("temperature", 1.0)),
        tflite_path=tflite if tflite.is_file() else None,
        precision=str(training.get("precision", "unknown")),
        backend=str(training.get("backend", "unknown")),
        hardware=str(training.get("hardware", "unknown")),
    )


def import_model(
    model_path: Path,
    source: str,
    ref: DatasetRef,
    home: Path,
    registry: ModelRegistry,
    gate: GateConfig,
) -> ImportedModel:
    """Publish an externally trained model as a new version and promote it if it passes.

    Args:
        model_path: the ``.keras`` file, with its training run's ``manifest.json`` beside it.
        source: what trained it, in words (recorded in the manifest and model card).
        ref: the configured dataset: its fingerprint must be the one the model was trained
            on, and its test split scores the model.
        home: platform home (run directory, array cache).
        registry: the model store.
        gate: promotion criteria, as for a retrain.

    Returns:
        The new version, its test metrics and the gate's decision (it was promoted).

    Raises:
        ImportRefused: a wrong file or record, or a model trained on other data; nothing is
            published.
        GateFailed: the model did not pass the gate; nothing is published and the champion
            stays.
        RegistryError: the store failed.
    """
    model = load_importable(model_path)
    record = read_training_record(model_path)
    trained_on = record["dataset"]["fingerprint"]
    if trained_on != ref.fingerprint:
        raise ImportRefused(
            f"{model_path} was trained on dataset {trained_on[:12]} but the configured dataset "
            f"{ref.source} is {ref.fingerprint[:12]}; import it against the data it was "
            "trained on (--dataset or FER_DATASET), or retrain it on this one"
        )
    config = _train_config(record, model_path)
    run_dir = _prepare_run(model, config, record, ref, home)
    metrics = evaluate_model(run_dir / MODEL_FILE, ref, home, run_dir)
    decision = decide(metrics, gate, score_champion(registry, ref, home, run_dir))
    enforce(decision)
    origin = _origin(model_path, source, record)
    trained = _trained(run_dir, record)
    version, _ = publish_run(registry, trained, metrics, ref, config, decision, origin)
    registry.promote(version)
    logger.info("imported %s as %s (test accuracy %.4f)", model_path, version, metrics.accuracy)
    return ImportedModel(version=version, metrics=metrics, decision=decision)


def _origin(model_path: Path, source: str, record: dict[str, Any]) -> dict[str, Any]:
    """Where an imported model came from, for its manifest."""
    reported = record.get("metrics", {}).get("accuracy")
    return {
        "source": source,
        "file": model_path.name,
        "sha256": sha256_file(model_path),
        "reported_test_accuracy": reported,
    }
