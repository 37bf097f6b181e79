"""Training: config, validation split carved from train, fit, save the run's artefacts."""

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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.model_selection import train_test_split

from model.calibration import expected_calibration_error, fit_temperature, softmax
from model.cleaning import CLEANING_FILE, CleaningConfig, cleaned_train_arrays, write_cleaning
from model.dataset import CLASSES, IMAGE_SIZE, DatasetRef
from model.errors import ConfigError
from model.export import TFLITE_FILE, export_tflite
from model.network import (
    AugmentConfig,
    NetworkConfig,
    build_model,
    fold_batch_norm,
    logits_model,
    with_temperature,
)
from model.predict import load_keras_model
from model.warmstart import Parent, WarmStart, start_from

if TYPE_CHECKING:
    import keras

    from model.callbacks import ProgressListener

logger = logging.getLogger(__name__)

Profile = Literal["quick", "cpu", "gpu"]
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"
CURVES_FILE = "training_curves.png"
CALIBRATION_FILE = "calibration.json"
# Validation images the TFLite export is compared with Keras on.
EXPORT_CHECK_IMAGES = 256


class TrainConfig(BaseModel):
    """Hyperparameters of one training run (a flow parameter, so it shows in the Prefect UI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(
        5,
        ge=1,
        le=1000,
        description="Maximum epochs (each a pass over epoch_fraction of the training split).",
    )
    batch_size: int = Field(128, ge=1, le=4096, description="Images per gradient step.")
    epoch_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of the training split one epoch covers (the next continues with "
        "fresh images). Below 1 the time budget, the learning-rate schedule, validation and "
        "progress move in finer steps: for minutes-long budgets on slow CPUs.",
    )
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="Adam, AdamW, or SGD with Nesterov momentum."
    )
    learning_rate: float = Field(1e-3, gt=0, lt=1, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(0.0, ge=0, lt=1, description="Decoupled weight decay.")
    schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="Learning rate after warm-up: constant, or cosine decay to 0 over the "
        "planned epochs (re-planned from measured epoch times when a time budget is set).",
    )
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warm-up from 0, in epochs.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the loss.")
    ema_momentum: float | None = Field(
        None,
        ge=0.9,
        lt=1,
        description="Keep an exponential moving average of the weights with this momentum; "
        "validation, the kept epoch and the served model use the average (None: off).",
    )
    warm_start: bool = Field(
        False,
        description="Start from the champion's weights when the champion has this network "
        "(the nightly profiles); from scratch, with the reason logged and recorded, when it "
        "has another, there is none, or it cannot be read. The manifest records the parent.",
    )
    warm_restart_lr: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Peak learning rate of a warm-started run as a fraction of learning_rate "
        "(an SGDR-style warm restart: warm-up, then the same schedule from a lower peak).",
    )
    class_weighting: Literal["none", "sqrt", "balanced"] = Field(
        "none",
        description="Loss weight per class: none, 1/sqrt(class count) (a mild lift for rare "
        "classes such as disgust), or 1/count (balanced); scaled to a mean of 1 per image.",
    )
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = Field(
        "float32",
        description="Compute precision while training (variables stay float32; the saved "
        "model is float32). mixed_bfloat16 trains 1.3x faster on a CPU with AVX512_BF16 "
        "but 8x slower on one without (emulated); auto picks mixed_float16 on a GPU, "
        "mixed_bfloat16 on a CPU with native bfloat16, float32 otherwise.",
    )
    time_budget_minutes: float | None = Field(
        None,
        gt=0,
        description="Stop before an epoch that would end past this many minutes of training "
        "(counted across resumes); the best checkpoint by validation accuracy is kept.",
    )
    test_time_flip: bool = Field(
        False,
        description="Serve the average of the logits of each face and its mirror image; "
        "built into the saved model, so evaluation and serving agree (twice the inference "
        "cost).",
    )
    test_time_shifts: bool = Field(
        False,
        description="Also average the four corner crops (with test_time_flip: the ten-crop "
        "evaluation); needs centre-crop training (network.augment.crop with crop_inference "
        "'center'). Built into the saved model; five times the inference cost.",
    )
    steps_per_execution: int = Field(
        1,
        ge=1,
        le=256,
        description="Training steps run per call from Python into the compiled step (fewer "
        "host round trips on a GPU); 1 on the CPU.",
    )
    resumable: bool = Field(
        True,
        description="Back the run up after every epoch so that a killed run resumes where it "
        "stopped. Costs one model save per epoch (about 0.15 s for the gpu net): off for "
        "runs of a few minutes whose epochs take seconds on a GPU.",
    )
    quantize_export: bool = Field(
        True,
        description="Store the serving export (serving.tflite) with int8 weights: 3.7x faster "
        "per face than float32, within 0.15 points of its test accuracy on the cpu recipe; "
        "evaluation and the gate score the export itself.",
    )
    validation_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="Share of train held out (stratified) for model selection."
    )
    early_stopping_patience: int | None = Field(
        5, ge=1, description="Epochs without validation-accuracy gain before stopping (None: off)."
    )
    seed: int = Field(1337, description="Seed for the split, weight init, shuffling, augmentation.")
    network: NetworkConfig = Field(
        default_factory=NetworkConfig,
        description="Network shape and the augmentation layers inside it.",
    )
    cleaning: CleaningConfig = Field(
        default_factory=CleaningConfig,
        description="Which training images are left out (duplicates, test leakage, blanks).",
    )

    @model_validator(mode="after")
    def _shifts_need_centre_crops(self) -> TrainConfig:
        augment = self.network.augment
        if self.test_time_shifts and not (augment.crop and augment.crop_inference == "center"):
            raise ValueError(
                "test_time_shifts needs centre-crop training: set network.augment.crop "
                "(e.g. 40) and network.augment.crop_inference='center', or turn it off"
            )
        return self

    @property
    def test_time_shift(self) -> int:
        """Pixels the corner views of test-time averaging are shifted by (0: none)."""
        if not self.test_time_shifts:
            return 0
        return (IMAGE_SIZE - self.network.augment.crop) // 2

    @classmethod
    def profile(cls, name: Profile) -> TrainConfig:
        """A named training profile.

        * ``quick``: a first champion in minutes on any CPU (the README's main command):
          the ``cpu`` recipe on a quarter of its network, in a 4-minute budget counted in
          tenths of an epoch (see :meth:`_quick`).
        * ``cpu``: the nightly recipe for 2 CPU cores: a BatchNorm VGG (32-64-128-256,
          global average pooling, TensorFlow's fused BatchNorm kernel) trained on random
          40 x 40 crops with flip, rotation, zoom and contrast augmentation; SGD-Nesterov
          with warm-up, cosine decay planned to a 57-minute budget and strong decoupled
          weight decay, label smoothing, 1/sqrt class weights; bfloat16 compute where the
          CPU has it natively, else float32. It serves the centre crop and its mirror
          image, averaged.
        * ``gpu``: the same code path for one GPU (TensorFlow or JAX backend): twice as
          wide, batch 512, up to 300 epochs in a 6-minute budget, ten-crop test-time
          averaging (see :meth:`_gpu`).

        Args:
            name: ``quick``, ``cpu`` or ``gpu``.

        Returns:
            The profile's config.
        """
        augment = AugmentConfig(
            translate=0,
            zoom=0.1,
            rotate_degrees=10,
            contrast=0.2,
            # Random erasing (p 0.5) with dense dropout 0.5 scored 65.9 % served (r2); without
            # it and with dropout 0.3, 66.4 % (r4) and disgust recall 0.63 instead of 0.50.
            erase=0.0,
            crop=40,
            crop_inference="center",
        )
        cpu = cls(
            epochs=100,
            batch_size=128,
            optimizer="sgd",
            learning_rate=0.05,
            # Keras decays decoupled (w -= lr * wd * w), so 5e-3 matches the classic SGD
            # recipe's coupled 5e-4 under momentum 0.9. The fused BatchNorm's extra epochs
            # scored 64.6 % with 5e-4 (r5), 67.1 % with 5e-3 (r6), 67.6 % with 1e-2 (r7) and
            # 66.5 % with 2e-2 (r8; float model, public test split).
            weight_decay=1e-2,
            label_smoothing=0.1,
            class_weighting="sqrt",
            warmup_epochs=1,
            schedule="cosine",
            # Emulated bfloat16 (a CPU without AVX512_BF16) would train 8x slower.
            precision="auto",
            time_budget_minutes=57,
            early_stopping_patience=None,
            # Each night continues from the champion (a lower-peak restart) when it fits.
            warm_start=True,
            network=NetworkConfig(
                filters=(32, 64, 128, 256),
                batch_norm=True,
                fused_batch_norm=True,
                head="gap",
                dense_units=256,
                conv_dropout=0.0,
                dense_dropout=0.3,
                augment=augment,
            ),
            test_time_flip=True,
        )
        if name == "cpu":
            return cpu
        if name == "quick":
            return cls._quick(cpu)
        return cls._gpu(cpu)

    @classmethod
    def _quick(cls, cpu: TrainConfig) -> TrainConfig:
        """The ``quick`` profile: the cpu recipe shrunk to a first champion in minutes.

        Time-budgeted, so its length does not depend on the CPU; what the CPU changes is
        how far it gets. A quarter of the cpu network's multiply-adds (16-32-64-128 filters,
        dense 128) trains about three passes in the budget where the cpu network would
        manage one (docs/experiments.md, r18-r20). Epochs of a tenth of the data give the
        budget, the cosine schedule and validation a grain of seconds rather than of
        2-minute passes; BatchNorm statistics with momentum 0.9 settle within the few
        hundred steps. No warm start: it is the first model.
        """
        network = cpu.network.model_copy(
            update={"filters": (16, 32, 64, 128), "dense_units": 128, "batch_norm_momentum": 0.9}
        )
        return cpu.model_copy(
            update={
                "epochs": 1000,
                "epoch_fraction": 0.1,
                "time_budget_minutes": 4,
                "warm_start": False,
                "network": network,
            }
        )

    @classmethod
    def _gpu(cls, cpu: TrainConfig) -> TrainConfig:
        """The ``gpu`` profile: the cpu recipe scaled up for one GPU and a few minutes.

        A BatchNorm VGG twice as wide (64-128-256-512, ~5M parameters, small enough to ship
        with float16 weights), trained for up to 300 epochs in a 6-minute budget: the
        anchors at 73-74 % train 250-300 epochs. Batch 512 with the learning rate scaled
        linearly (0.05 at 128 -> 0.2) and weight decay scaled down so the shrink per step
        (learning rate x decay) stays the cpu recipe's. Longer training takes stronger
        augmentation (rotation 15, zoom 0.15, random erasing p 0.5) and dense dropout 0.5.
        bfloat16 where the GPU has it, and ten-crop test-time averaging.
        """
        augment = cpu.network.augment.model_copy(
            update={"rotate_degrees": 15, "zoom": 0.15, "erase": 0.5}
        )
        network = cpu.network.model_copy(
            update={
                "filters": (64, 128, 256, 512),
                "dense_units": 512,
                "dense_dropout": 0.5,
                "augment": augment,
            }
        )
        return cpu.model_copy(
            update={
                "epochs": 300,
                "batch_size": 512,
                "learning_rate": 0.2,
                "weight_decay": 2.5e-3,
                "warmup_epochs": 5,
                "time_budget_minutes": 6,
                "steps_per_execution": 8,
                "resumable": False,  # a killed 6-minute run is simply started again
                "test_time_shifts": True,
                "network": network,
            }
        )


@dataclass(frozen=True)
class TrainResult:
    """Where a training run left its artefacts, plus a summary for lineage."""

    run_dir: Path
    model_path: Path
    history_path: Path
    epochs_run: int
    best_val_accuracy: float
    cleaning_path: Path | None = None
    temperature: float = 1.0
    tflite_path: Path | None = None
    precision: str = "float32"
    backend: str = "tensorflow"
    hardware: str = ""
    warm_start: WarmStart | None = None
    #: Images per training epoch (the cleaned train split minus the validation split).
    train_images: int = 0


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


Distribute = Literal["none", "mirrored"]


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


def _build(config: TrainConfig, precision: str) -> keras.Model:
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


def _batches(
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
    with it, deleting an iterator stalled ~50 s at 0 % CPU (every thread on a futex) at the
    start of about half the epochs.

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
    # an iterator (Keras does at every evaluation) waited for it: 35-50 s at 0 % CPU.
    options = tf.data.Options()
    options.autotune.enabled = False

    def gather(index: tf.Tensor) -> tuple[tf.Tensor, ...]:
        batch = (tf.cast(tf.gather(images, index), tf.float32), tf.gather(labels, index))
        return batch if weights is None else (*batch, tf.gather(weights, index))

    dataset = order.batch(batch_size).repeat().map(gather).prefetch(2).with_options(options)
    return dataset, -(-len(x) // batch_size)


def _optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
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

    With ``config.warm_start`` the network starts from ``parent``'s weights when they fit
    (see :mod:`model.warmstart`) and its learning rate restarts at ``warm_restart_lr`` of
    the peak; otherwise, and without a parent, it starts from fresh weights.

    The best epoch by validation accuracy is kept (``test/`` plays no part). Unless
    ``config.resumable`` is off, progress is backed up to ``resume_dir`` after every epoch:
    a run killed mid-way and started again
    with the same ``resume_dir`` continues from its last finished epoch, with the same
    learning-rate plan, time budget and best checkpoint. The folder is removed once the
    model is saved.

    Args:
        x: uint8 images N x 48 x 48 x 1.
        y: label indices.
        config: hyperparameters.
        run_dir: existing directory for the run's artefacts.
        resume_dir: where to keep (and look for) the backup; default ``run_dir/resume``.
        callbacks: extra Keras callbacks (progress reporting, say), run after the built-in ones.
        strategy: a ``tf.distribute`` strategy to train under (see
            :func:`distribution_strategy`); ``config.batch_size`` is then the global batch,
            split across its replicas. None trains on one device.
        listeners: called with each epoch's :class:`model.callbacks.EpochProgress`.
        parent: the champion to warm-start from (used only with ``config.warm_start``).
        no_parent_reason: why there is no parent, recorded when ``parent`` is None.

    Returns:
        Paths of the saved model (float32, calibrated, augmentation inactive outside
        training), its TFLite export (when the backend can export it and it matches Keras)
        and the history.
    """
    import keras

    from model.callbacks import TrainingPlan
    from model.hardware import cpu_flags, describe_hardware, gpu_info, resolve_precision

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
    keras.utils.set_random_seed(config.seed)
    resume_dir = resume_dir or run_dir / "resume"
    if not config.resumable:  # what a killed run left there would not match fresh weights
        shutil.rmtree(resume_dir, ignore_errors=True)
    resume_dir.mkdir(parents=True, exist_ok=True)
    x_train, x_val, y_train, y_val = split_train_validation(
        x, y, config.validation_fraction, config.seed
    )
    one_hot = np.eye(len(CLASSES), dtype=np.float32)
    # Variables (weights, optimizer slots, seed generators) must be created in the
    # strategy's scope to be mirrored; fit then distributes each batch by itself.
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = _build(config, precision)
        model.compile(
            optimizer=_optimizer(config),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy"],
            steps_per_execution=config.steps_per_execution,
        )
    require_jit(model)
    warm = start_from(model, parent, no_parent_reason) if config.warm_start else None
    restart = warm is not None and warm.parent is not None
    plan = TrainingPlan(
        max_epochs=config.epochs,
        peak=config.learning_rate * (config.warm_restart_lr if restart else 1.0),
        warmup_epochs=config.warmup_epochs,
        schedule=config.schedule,
        budget_seconds=config.time_budget_minutes * 60 if config.time_budget_minutes else None,
        state_path=resume_dir / "plan.json",
        listeners=listeners,
    )
    best_path = resume_dir / "best.keras"
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
    used += callbacks
    if len(plan.state["seconds"]) < plan.planned:
        weights = class_weights(y_train, len(CLASSES), config.class_weighting)
        train, train_steps = _batches(
            x_train,
            one_hot[y_train],
            config.batch_size,
            config.seed,
            None if config.class_weighting == "none" else weights[y_train],
        )
        val, val_steps = _batches(x_val, one_hot[y_val], 512, None)
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
                callbacks=used,
                verbose=0,
            )
        else:
            model.fit(
                train,
                steps_per_epoch=steps,  # the pipeline repeats: a short epoch continues it
                validation_data=val,
                validation_steps=val_steps,
                epochs=config.epochs,
                shuffle=False,  # the pipeline shuffles
                callbacks=used,
                verbose=0,
            )
    # The kept epoch, rebuilt in float32 for serving and export, then calibrated on validation.
    final = _build(config, "float32")
    final.set_weights(load_keras_model(best_path).get_weights())
    views = {"flip_average": config.test_time_flip, "shift": config.test_time_shift}
    calibration = _calibrate(with_temperature(final, 1.0, **views), x_val, y_val)
    model_path = run_dir / MODEL_FILE
    served = with_temperature(final, calibration["temperature"], **views)
    served.save(model_path)
    folded = fold_batch_norm(final, config.network, (IMAGE_SIZE, IMAGE_SIZE, 1), config.seed)
    exported = export_tflite(
        with_temperature(folded, calibration["temperature"], **views),
        run_dir / TFLITE_FILE,
        x_val[:EXPORT_CHECK_IMAGES],
        reference=served,
        quantize=config.quantize_export,
    )
    (run_dir / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=2))
    history = plan.history
    history_path = run_dir / HISTORY_FILE
    history_path.write_text(json.dumps(history, indent=2))
    plot_curves(history, run_dir / CURVES_FILE)
    shutil.rmtree(resume_dir, ignore_errors=True)
    return TrainResult(
        run_dir=run_dir,
        model_path=model_path,
        history_path=history_path,
        epochs_run=len(plan.state["seconds"]),
        best_val_accuracy=float(plan.best or 0.0),
        temperature=calibration["temperature"],
        tflite_path=run_dir / TFLITE_FILE if exported else None,
        precision=precision,
        backend=keras.backend.backend(),
        hardware=hardware,
        train_images=len(y_train),
        warm_start=warm,
    )


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
        "Use the platform's augmentation (model.layers.RandomAffine) instead"
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
) -> TrainResult:
    """Train on the dataset's cleaned ``train/`` split (``test/`` is never touched here).

    Cleaning (see ``model.cleaning``) removes every training image whose pixels occur in test,
    duplicates, label-conflicting copies and blank frames, and records what it removed.

    Args:
        ref: the dataset.
        config: hyperparameters.
        home: platform home (array cache and run directories).
        distribute: ``FER_DISTRIBUTE``: ``none`` or ``mirrored`` (every local GPU).
        listeners: called after each epoch with its :class:`model.callbacks.EpochProgress`.
        parent: the champion to warm-start from (with ``config.warm_start``).
        no_parent_reason: why there is none, recorded when ``parent`` is None.

    Returns:
        Where the model and its history were saved.
    """
    strategy = distribution_strategy(distribute)
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
