"""Training: config, validation split carved from train, fit, save the run's artefacts."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.model_selection import train_test_split

from model.cleaning import CLEANING_FILE, CleaningConfig, cleaned_train_arrays, write_cleaning
from model.dataset import CLASSES, IMAGE_SIZE, DatasetRef
from model.network import NetworkConfig, build_model

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"


class TrainConfig(BaseModel):
    """Hyperparameters of one training run (a flow parameter, so it shows in the Prefect UI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(5, ge=1, le=1000, description="Maximum passes over the training split.")
    batch_size: int = Field(128, ge=1, le=4096, description="Images per gradient step.")
    learning_rate: float = Field(1e-3, gt=0, lt=1, description="Adam learning rate.")
    validation_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="Share of train held out (stratified) for early stopping."
    )
    early_stopping_patience: int = Field(
        5, ge=1, description="Epochs without validation-accuracy gain before stopping."
    )
    seed: int = Field(1337, description="Seed for the split, weight init and shuffling.")
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig)


@dataclass(frozen=True)
class TrainResult:
    """Where a training run left its artefacts, plus a summary for lineage."""

    run_dir: Path
    model_path: Path
    history_path: Path
    epochs_run: int
    best_val_accuracy: float
    cleaning_path: Path | None = None


def new_run_dir(home: Path) -> Path:
    """Create a fresh, uniquely named run directory under ``<home>/runs``.

    Args:
        home: the platform home.

    Returns:
        The new, empty directory.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = home / "runs" / f"{stamp}-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True)
    return run_dir


def configure_threads() -> None:
    """Use every core for each op and one op at a time, the fastest CPU setting measured.

    TensorFlow accepts this only before its runtime starts; later calls are ignored.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        logger.debug("TensorFlow already initialised; thread settings unchanged")


def _epoch_logger(total_epochs: int) -> keras.callbacks.Callback:
    """A callback that logs each epoch's metrics, so they reach the Prefect UI as log lines."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            scores = ", ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()))
            seconds = time.perf_counter() - self.started
            logger.info("epoch %d/%d (%.0f s): %s", epoch + 1, total_epochs, seconds, scores)

    return EpochLogger()


def split_train_validation(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Carve a stratified, seeded validation split out of the training data.

    Args:
        x: images.
        y: labels.
        fraction: share of images that go to validation.
        seed: random seed; the same seed gives the same split.

    Returns:
        ``(x_train, x_val, y_train, y_val)``.
    """
    counts = np.bincount(y)
    # Stratification needs two members per class; tiny subsets fall back to a plain split.
    stratify = y if counts[counts > 0].min() >= 2 else None
    n_val = max(int(round(len(y) * fraction)), len(np.unique(y)) if stratify is not None else 1)
    return train_test_split(x, y, test_size=n_val, random_state=seed, stratify=stratify)


def fit_model(x: np.ndarray, y: np.ndarray, config: TrainConfig, run_dir: Path) -> TrainResult:
    """Train a fresh network on arrays and save it with its history into ``run_dir``.

    Args:
        x: uint8 images N x 48 x 48 x 1.
        y: label indices.
        config: hyperparameters.
        run_dir: existing directory for the run's artefacts.

    Returns:
        Paths of the saved model and history.
    """
    import keras

    configure_threads()
    keras.utils.set_random_seed(config.seed)
    x_train, x_val, y_train, y_val = split_train_validation(
        x, y, config.validation_fraction, config.seed
    )
    model = build_model(config.network, (IMAGE_SIZE, IMAGE_SIZE, 1), len(CLASSES))
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train.astype("float32"),
        y_train,
        validation_data=(x_val.astype("float32"), y_val),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                patience=config.early_stopping_patience,
                restore_best_weights=True,
            ),
            _epoch_logger(config.epochs),
        ],
        verbose=0,
    )
    model_path = run_dir / MODEL_FILE
    model.save(model_path)
    history_path = run_dir / HISTORY_FILE
    history_path.write_text(
        json.dumps({k: [float(v) for v in vs] for k, vs in history.history.items()}, indent=2)
    )
    val_acc = history.history.get("val_accuracy", [0.0])
    return TrainResult(
        run_dir=run_dir,
        model_path=model_path,
        history_path=history_path,
        epochs_run=len(val_acc),
        best_val_accuracy=float(max(val_acc)),
    )


def train_model(ref: DatasetRef, config: TrainConfig, home: Path) -> TrainResult:
    """Train on the dataset's cleaned ``train/`` split (``test/`` is never touched here).

    Cleaning (see ``model.cleaning``) removes every training image whose pixels occur in test,
    duplicates, label-conflicting copies and blank frames, and records what it removed.

    Args:
        ref: the dataset.
        config: hyperparameters.
        home: platform home (array cache and run directories).

    Returns:
        Where the model and its history were saved.
    """
    x, y, cleaning = cleaned_train_arrays(ref, home, config.cleaning)
    run_dir = new_run_dir(home)
    cleaning_path = run_dir / CLEANING_FILE
    write_cleaning(cleaning, cleaning_path)
    logger.info(
        "training on %d of %d train images (removed %s), run dir %s",
        len(y),
        cleaning.train_before,
        cleaning.removed_counts,
        run_dir,
    )
    result = fit_model(x, y, config, run_dir)
    return dataclasses.replace(result, cleaning_path=cleaning_path)
