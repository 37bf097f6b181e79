"""Training: the validation split carved from train, fit, calibration, the run's artefacts."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import train_test_split

from model.contract import CLASSES, IMAGE_SIZE, MODEL_FILE, TFLITE_FILE, DatasetRef
from model.data.cleaning import CLEANING_FILE, Cleaned, clean_dataset, cleaned_train_arrays
from model.errors import ConfigError
from model.inference.predictor import load_keras_model
from model.training.calibration import expected_calibration_error, fit_temperature, softmax
from model.training.config import (
    CALIBRATION_FILE,
    CURVES_FILE,
    EXPORT_CHECK_IMAGES,
    HISTORY_FILE,
    Distribute,
    TrainConfig,
    TrainResult,
)
from model.training.export import export_tflite
from model.training.network import (
    build_model,
    fold_batch_norm,
    logits_model,
    with_temperature,
)
from model.training.warmstart import Parent, WarmStart, start_from

if TYPE_CHECKING:
    import keras

    from model.training.callbacks import ProgressListener, TrainingPlan

logger = logging.getLogger(__name__)


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

    Only for the TensorFlow backend, and only before its runtime starts; later calls are
    ignored.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        logger.debug("TensorFlow already initialised; thread settings unchanged")


def distribution_strategy(name: Distribute) -> Any | None:
    """The ``tf.distribute`` strategy that ``FER_DISTRIBUTE`` names, or None for one device.

    ``mirrored`` is ``tf.distribute.MirroredStrategy`` over every local GPU (data-parallel:
    the batch is split across them and gradients are all-reduced); with no GPU it holds the
    CPU alone, which works but gains nothing.

    Args:
        name: ``none`` or ``mirrored``.

    Returns:
        The strategy, or None.

    Raises:
        ConfigError: for another name, or ``mirrored`` on a backend other than TensorFlow.
    """
    if name == "none":
        return None
    if name != "mirrored":
        raise ConfigError(f"FER_DISTRIBUTE must be none or mirrored, not {name!r}")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ConfigError(
            f"FER_DISTRIBUTE=mirrored needs the TensorFlow backend, not "
            f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow or FER_DISTRIBUTE=none"
        )
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy()
    logger.info("training on %d replica(s) with MirroredStrategy", strategy.num_replicas_in_sync)
    return strategy


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


def build_network(config: TrainConfig, precision: str) -> keras.Model:
    """Build the network under a dtype policy (restored afterwards: it is global state)."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        return build_model(config.network, (IMAGE_SIZE, IMAGE_SIZE, 1), len(CLASSES), config.seed)
    finally:
        keras.config.set_dtype_policy(previous)


def class_weights(y: np.ndarray, num_classes: int, scheme: str) -> np.ndarray:
    """Loss weight of each class, scaled so the average image weighs 1.

    Args:
        y: label indices of the training split.
        num_classes: number of classes.
        scheme: ``none``, ``sqrt`` (1/sqrt(count)) or ``balanced`` (1/count).

    Returns:
        One weight per class (classes absent from ``y`` get 0).
    """
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    power = {"none": 0.0, "sqrt": 0.5, "balanced": 1.0}[scheme]
    weights[present] = counts[present] ** -power
    return (weights * len(y) / float(counts @ weights)).astype(np.float32)


def input_pipeline(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int | None,
    sample_weights: np.ndarray | None = None,
) -> tuple[Any, int | None]:
    """The data as ``fit`` takes it: an endless tf.data pipeline under TensorFlow, else arrays.

    Under TensorFlow the uint8 images stay uint8 in memory and each step gathers one batch of
    shuffled indices and casts it: no float copy of the split, no per-image shuffle buffer.
    The pipeline repeats (reshuffled each pass) and ``fit`` is given the steps of one pass, so
    Keras keeps one training iterator for the whole run, and tf.data's autotuning is off:
    with it, deleting an iterator stalled for tens of seconds at 0 % CPU (every thread on a
    futex) at the start of about half the epochs.

    Args:
        x: uint8 images.
        y: one-hot labels.
        batch_size: images per step.
        seed: shuffle seed, or None for a fixed order (validation).
        sample_weights: loss weight of each image, or None.

    Returns:
        ``(tf.data.Dataset, steps per pass)``, or ``((x, y[, weights]), None)`` on other
        backends (Keras shuffles the arrays itself).
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return ((x, y) if sample_weights is None else (x, y, sample_weights)), None
    import tensorflow as tf

    images, labels = tf.constant(x), tf.constant(y)
    weights = None if sample_weights is None else tf.constant(sample_weights)
    order = tf.data.Dataset.range(len(x))
    if seed is not None:
        order = order.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    # No autotuning: its background thread waits on a timer of up to a minute, and deleting
    # an iterator (Keras does at every evaluation) waited for it, at 0 % CPU.
    options = tf.data.Options()
    options.autotune.enabled = False

    def gather(index: tf.Tensor) -> tuple[tf.Tensor, ...]:
        batch = (tf.cast(tf.gather(images, index), tf.float32), tf.gather(labels, index))
        return batch if weights is None else (*batch, tf.gather(weights, index))

    dataset = order.batch(batch_size).repeat().map(gather).prefetch(2).with_options(options)
    return dataset, -(-len(x) // batch_size)


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """The configured optimizer (with weight decay and the EMA of weights when set)."""
    import keras

    decay = config.weight_decay or None
    ema = {"use_ema": config.ema_momentum is not None, "ema_momentum": config.ema_momentum or 0.99}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(
            config.learning_rate,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=decay,
            **ema,
        )
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay, **ema)
    return keras.optimizers.Adam(config.learning_rate, weight_decay=decay, **ema)


def fit_model(
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    run_dir: Path,
    resume_dir: Path | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    strategy: Any | None = None,
    listeners: tuple[ProgressListener, ...] = (),
    parent: Parent | None = None,
    no_parent_reason: str = "no champion was looked up",
) -> TrainResult:
    """Train a network on arrays and save it with its history into ``run_dir``.

    With ``config.warm_start`` it starts from ``parent``'s weights when they fit (see
    :mod:`model.training.warmstart`). The best epoch by validation accuracy is kept. Unless
    ``config.resumable`` is off, a killed run started again with the same ``resume_dir``
    continues from its last finished epoch, plan, budget and best checkpoint.

    Args:
        x: uint8 images N x 48 x 48 x 1.
        y: label indices.
        config: hyperparameters.
        run_dir: existing directory for the run's artefacts.
        resume_dir: where to keep (and look for) the backup; default ``run_dir/resume``.
        callbacks: extra Keras callbacks, run after the built-in ones.
        strategy: a ``tf.distribute`` strategy (see :func:`distribution_strategy`);
            ``config.batch_size`` is then the global batch. None trains on one device.
        listeners: called with each epoch's :class:`model.training.callbacks.EpochProgress`.
        parent: the champion to warm-start from (used only with ``config.warm_start``).
        no_parent_reason: why there is no parent, recorded when ``parent`` is None.

    Returns:
        Paths of the saved model (float32, calibrated), its TFLite export (when it matches
        Keras) and the history.
    """
    import keras

    precision, hardware = _precision_on_this_machine(config)
    keras.utils.set_random_seed(config.seed)
    resume_dir = _resume_dir(config, resume_dir or run_dir / "resume")
    x_train, x_val, y_train, y_val = split_train_validation(
        x, y, config.validation_fraction, config.seed
    )
    model = _compiled(config, precision, strategy)
    warm = start_from(model, parent, no_parent_reason) if config.warm_start else None
    plan = _training_plan(config, warm, resume_dir, listeners)
    best_path = resume_dir / "best.keras"
    if len(plan.state["seconds"]) < plan.planned:
        used = [*_callbacks(config, plan, resume_dir, best_path), *callbacks]
        _fit(model, config, used, (x_train, y_train), (x_val, y_val))
    served = _save_served(config, best_path, run_dir, x_val, y_val)
    history_path = _save_history(plan.history, run_dir)
    shutil.rmtree(resume_dir, ignore_errors=True)
    return TrainResult(
        run_dir=run_dir,
        model_path=run_dir / MODEL_FILE,
        history_path=history_path,
        epochs_run=len(plan.state["seconds"]),
        best_val_accuracy=float(plan.best or 0.0),
        temperature=served.temperature,
        tflite_path=run_dir / TFLITE_FILE if served.exported else None,
        precision=precision,
        backend=keras.backend.backend(),
        hardware=hardware,
        train_images=len(y_train),
        warm_start=warm,
    )


def _precision_on_this_machine(config: TrainConfig) -> tuple[str, str]:
    """Threads set, the compute precision resolved for this hardware; logged.

    Returns:
        ``(precision, hardware description)``.
    """
    import keras

    from model.training.hardware import cpu_flags, describe_hardware, gpu_info, resolve_precision

    configure_threads()
    gpu = gpu_info()
    precision = resolve_precision(
        config.precision, gpu is not None, cpu_flags(), gpu is not None and gpu.bfloat16
    )
    hardware = describe_hardware()
    logger.info(
        "training on %s with Keras %s (%s backend), compute precision %s (configured: %s)",
        hardware,
        keras.__version__,
        keras.backend.backend(),
        precision,
        config.precision,
    )
    return precision, hardware


def _resume_dir(config: TrainConfig, folder: Path) -> Path:
    """The backup folder, emptied first when the run is not resumable."""
    if not config.resumable:  # what a killed run left there would not match fresh weights
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _compiled(config: TrainConfig, precision: str, strategy: Any | None) -> keras.Model:
    """The network built and compiled (under ``strategy``'s scope when there is one)."""
    import keras

    # Variables (weights, optimizer slots, seed generators) must be created in the
    # strategy's scope to be mirrored; fit then distributes each batch by itself.
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_network(config, precision)
        model.compile(
            optimizer=make_optimizer(config),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy"],
            steps_per_execution=config.steps_per_execution,
        )
    require_jit(model)
    return model


def _training_plan(
    config: TrainConfig,
    warm: WarmStart | None,
    resume_dir: Path,
    listeners: tuple[ProgressListener, ...],
) -> TrainingPlan:
    """Epochs, learning-rate schedule and time budget; a warm start restarts at a lower peak."""
    from model.training.callbacks import TrainingPlan

    restart = warm is not None and warm.parent is not None
    return TrainingPlan(
        max_epochs=config.epochs,
        peak=config.learning_rate * (config.warm_restart_lr if restart else 1.0),
        warmup_epochs=config.warmup_epochs,
        schedule=config.schedule,
        budget_seconds=config.time_budget_minutes * 60 if config.time_budget_minutes else None,
        state_path=resume_dir / "plan.json",
        listeners=listeners,
    )


def _callbacks(
    config: TrainConfig, plan: TrainingPlan, resume_dir: Path, best_path: Path
) -> list[keras.callbacks.Callback]:
    """The built-in callbacks, in the order they must run."""
    import keras

    best = keras.callbacks.ModelCheckpoint(
        best_path, monitor="val_accuracy", mode="max", save_best_only=True
    )
    if plan.best is not None:
        best.best = plan.best  # resumed: only a better epoch replaces the kept one
    used: list[keras.callbacks.Callback] = [plan, best]
    if config.ema_momentum is not None:
        # Validate and checkpoint the averaged weights: swapped in at each epoch's end.
        used.insert(1, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if config.resumable:
        used.insert(0, keras.callbacks.BackupAndRestore(str(resume_dir / "backup")))
    if config.early_stopping_patience:
        used.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=config.early_stopping_patience
            )
        )
    return used


def _fit(
    model: keras.Model,
    config: TrainConfig,
    callbacks: list[keras.callbacks.Callback],
    train_split: tuple[np.ndarray, np.ndarray],
    val_split: tuple[np.ndarray, np.ndarray],
) -> None:
    """Run ``model.fit``: a repeating tf.data pipeline under TensorFlow, arrays elsewhere."""
    (x_train, y_train), (x_val, y_val) = train_split, val_split
    one_hot = np.eye(len(CLASSES), dtype=np.float32)
    weights = class_weights(y_train, len(CLASSES), config.class_weighting)
    train, train_steps = input_pipeline(
        x_train,
        one_hot[y_train],
        config.batch_size,
        config.seed,
        None if config.class_weighting == "none" else weights[y_train],
    )
    val, val_steps = input_pipeline(x_val, one_hot[y_val], 512, None)
    full_pass = -(-len(y_train) // config.batch_size)
    steps = max(1, round(full_pass * config.epoch_fraction))
    if train_steps is None:
        model.fit(
            *train[:2],
            sample_weight=train[2] if len(train) > 2 else None,
            validation_data=val,
            epochs=config.epochs,
            batch_size=config.batch_size,
            steps_per_epoch=steps if config.epoch_fraction < 1 else None,
            shuffle=True,
            callbacks=callbacks,
            verbose=0,
        )
        return
    model.fit(
        train,
        steps_per_epoch=steps,  # the pipeline repeats: a short epoch continues it
        validation_data=val,
        validation_steps=val_steps,
        epochs=config.epochs,
        shuffle=False,  # the pipeline shuffles
        callbacks=callbacks,
        verbose=0,
    )


@dataclass(frozen=True)
class _Served:
    temperature: float
    exported: bool


def _save_served(
    config: TrainConfig, best_path: Path, run_dir: Path, x_val: np.ndarray, y_val: np.ndarray
) -> _Served:
    """The kept epoch rebuilt in float32, calibrated on validation, saved and exported."""
    final = build_network(config, "float32")
    final.set_weights(load_keras_model(best_path).get_weights())
    views = {"flip_average": config.test_time_flip, "shift": config.test_time_shift}
    calibration = _calibrate(with_temperature(final, 1.0, **views), x_val, y_val)
    served = with_temperature(final, calibration["temperature"], **views)
    served.save(run_dir / MODEL_FILE)
    folded = fold_batch_norm(final, config.network, (IMAGE_SIZE, IMAGE_SIZE, 1), config.seed)
    exported = export_tflite(
        with_temperature(folded, calibration["temperature"], **views),
        run_dir / TFLITE_FILE,
        x_val[:EXPORT_CHECK_IMAGES],
        reference=served,
        quantize=config.quantize_export,
    )
    (run_dir / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=2))
    return _Served(calibration["temperature"], exported is not None)


def _save_history(history: dict[str, list[float]], run_dir: Path) -> Path:
    """The per-epoch history as JSON and as the training-curves PNG."""
    path = run_dir / HISTORY_FILE
    path.write_text(json.dumps(history, indent=2))
    plot_curves(history, run_dir / CURVES_FILE)
    return path


def require_jit(model: keras.Model) -> None:
    """Under JAX, insist that Keras compiles the training step with XLA.

    A single layer with ``supports_jit = False`` (Keras's ``RandomRotation``, ``RandomZoom``,
    ``RandomTranslation``, ``RandomCrop``, ...) turns jit off for the whole model, and a GPU
    then runs each op on its own, about as fast as two CPU cores. Other backends are left
    alone: TensorFlow trains faster without XLA on the CPU.

    Args:
        model: a compiled model.

    Raises:
        ConfigError: under JAX when the step would not be jitted; names the layers to blame.
    """
    import keras

    if keras.backend.backend() != "jax" or model.jit_compile:
        return
    blockers = [
        f"{layer.name} ({type(layer).__name__})"
        for layer in model._flatten_layers()
        if not getattr(layer, "supports_jit", True)
    ]
    raise ConfigError(
        "the training step would not be compiled with XLA under JAX (each op would run on "
        f"its own); layers without jit support: {', '.join(blockers) or 'none found'}. "
        "Use the platform's augmentation (model.inference.layers.RandomAffine) instead"
    )


def _calibrate(model: keras.Model, x_val: np.ndarray, y_val: np.ndarray) -> dict[str, float]:
    """Fit the softmax temperature on the validation split; report its ECE before and after."""
    logits = np.asarray(
        logits_model(model).predict(x_val.astype(np.float32), batch_size=512, verbose=0)
    )
    temperature = fit_temperature(logits, y_val)
    before = expected_calibration_error(softmax(logits), y_val)
    after = expected_calibration_error(softmax(logits, temperature), y_val)
    logger.info("temperature %.3f: validation ECE %.4f -> %.4f", temperature, before, after)
    return {"temperature": temperature, "val_ece_before": before, "val_ece_after": after}


def plot_curves(history: dict[str, list[float]], path: Path) -> Path:
    """Draw loss and accuracy per epoch (train and validation) as a PNG.

    Args:
        history: per-epoch metrics by name (``loss``, ``val_loss``, ``accuracy``, ...).
        path: where to write the PNG.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    for position, metric in enumerate(("loss", "accuracy"), start=1):
        axes = figure.add_subplot(1, 2, position)
        for name, style in ((metric, "-"), (f"val_{metric}", "--")):
            values = history.get(name, [])
            axes.plot(range(1, len(values) + 1), values, style, label=name)
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def train_model(
    ref: DatasetRef,
    config: TrainConfig,
    home: Path,
    distribute: Distribute = "none",
    listeners: tuple[ProgressListener, ...] = (),
    parent: Parent | None = None,
    no_parent_reason: str = "no champion was looked up",
    cleaned: Cleaned | None = None,
) -> TrainResult:
    """Train on what the clean step kept of ``train/`` (``test/`` is never touched here).

    The plan (:func:`model.data.cleaning.clean_dataset`) is copied into the run's folder, so
    the model's reports list what it never saw.

    Args:
        ref: the dataset.
        config: hyperparameters.
        home: platform home (array cache and run directories).
        distribute: ``FER_DISTRIBUTE``: ``none`` or ``mirrored`` (every local GPU).
        listeners: called after each epoch with its :class:`model.training.callbacks.EpochProgress`.
        parent: the champion to warm-start from (with ``config.warm_start``).
        no_parent_reason: why there is none, recorded when ``parent`` is None.
        cleaned: the clean step's result with ``config.cleaning``; None cleans here first
            (for callers outside the flow).

    Returns:
        Where the model and its history were saved.

    Raises:
        ConfigError: ``cleaned`` was made with other thresholds than ``config.cleaning``.
    """
    strategy = distribution_strategy(distribute)
    if cleaned is None:
        cleaned = clean_dataset(ref, home, config.cleaning)
    elif cleaned.config != config.cleaning:
        raise ConfigError(
            f"the cleaning plan {cleaned.report_path} was made with {cleaned.config}, the "
            f"training config asks for {config.cleaning}; clean with the training config's"
        )
    x, y = cleaned_train_arrays(ref, home, cleaned)
    run_dir = new_run_dir(home)
    cleaning_path = run_dir / CLEANING_FILE
    shutil.copyfile(cleaned.report_path, cleaning_path)
    logger.info("training on %d of %d train images (removed %s), run dir %s",
                len(y), cleaned.train_before, cleaned.removed_counts, run_dir)  # fmt: skip
    result = fit_model(
        x,
        y,
        config,
        run_dir,
        resume_dir(home, ref, config),
        strategy=strategy,
        listeners=listeners,
        parent=parent,
        no_parent_reason=no_parent_reason,
    )
    return dataclasses.replace(result, cleaning_path=cleaning_path)


def resume_dir(home: Path, ref: DatasetRef, config: TrainConfig) -> Path:
    """Where an unfinished run on this dataset with this config keeps its backup.

    A run that dies (killed, out of memory, a task timeout) and is started again with the
    same dataset and config continues from its last finished epoch.

    Args:
        home: platform home.
        ref: the dataset.
        config: hyperparameters.

    Returns:
        ``<home>/checkpoints/<hash of fingerprint and config>``.
    """
    key = hashlib.sha256(f"{ref.fingerprint}\n{config.model_dump_json()}".encode()).hexdigest()
    return home / "checkpoints" / key[:16]
