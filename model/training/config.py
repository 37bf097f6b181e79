"""What a training run is told (TrainConfig and its profiles) and what it leaves (TrainResult)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.contract import IMAGE_SIZE
from model.data.cleaning import CleaningConfig
from model.errors import ConfigError
from model.training.network import AugmentConfig, NetworkConfig
from model.training.warmstart import WarmStart

Distribute = Literal["none", "mirrored"]

Profile = Literal["quick", "cpu", "gpu"]
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
        "model is float32). mixed_bfloat16 trains faster on a CPU with AVX512_BF16 but "
        "several times slower on one without (emulated; docs/model.md); auto picks "
        "mixed_float16 on a GPU, mixed_bfloat16 on a CPU with native bfloat16, float32 "
        "otherwise.",
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
        description="Store the serving export (serving.tflite) with int8 weights: several "
        "times faster per face than float32 at nearly its test accuracy (docs/model.md); "
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
    def from_profile(cls, profile: str, **overrides: Any) -> TrainConfig:
        """A named profile with the values a user gave (None: not given) applied on top.

        Args:
            profile: ``quick``, ``cpu`` or ``gpu``.
            **overrides: TrainConfig fields; None values are ignored.

        Raises:
            ConfigError: the profile is unknown.
        """
        if profile not in get_args(Profile):
            raise ConfigError(f"unknown --profile {profile!r}; choose quick, cpu or gpu")
        base = cls.profile(profile)  # type: ignore[arg-type]
        given = {key: value for key, value in overrides.items() if value is not None}
        return cls.model_validate({**base.model_dump(), **given})

    @classmethod
    def profile(cls, name: Profile) -> TrainConfig:
        """A named training profile.

        * ``quick``: a first champion in minutes on any CPU (the README's main command):
          the ``cpu`` recipe on a half-width network with one convolution per block and
          crop-and-flip augmentation, in a 4-minute budget counted in fifths of an epoch
          (see :meth:`_quick`).
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
        cpu = cls._cpu()
        if name == "cpu":
            return cpu
        if name == "quick":
            return cls._quick(cpu)
        return cls._gpu(cpu)

    @classmethod
    def _cpu(cls) -> TrainConfig:
        """The ``cpu`` profile, the nightly recipe; the others are derived from it.

        Its choices were measured in docs/experiments.md (r2-r8 for erasing, dropout and
        weight decay).
        """
        augment = AugmentConfig(
            translate=0,
            zoom=0.1,
            rotate_degrees=10,
            contrast=0.2,
            # No random erasing, with dense dropout 0.3: better than erasing with dropout 0.5
            # on this budget, disgust recall above all (docs/experiments.md, r2 vs r4).
            erase=0.0,
            crop=40,
            crop_inference="center",
        )
        return cls(
            epochs=100,
            batch_size=128,
            optimizer="sgd",
            learning_rate=0.05,
            # Keras decays decoupled (w -= lr * wd * w), so 5e-3 matches the classic SGD
            # recipe's coupled 5e-4 under momentum 0.9; 1e-2 was the best of 5e-4 to 2e-2
            # with the fused BatchNorm's extra epochs (docs/experiments.md, r5-r8).
            weight_decay=1e-2,
            label_smoothing=0.1,
            class_weighting="sqrt",
            warmup_epochs=1,
            schedule="cosine",
            # Emulated bfloat16 (a CPU without AVX512_BF16) would train several times slower.
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

    @classmethod
    def _quick(cls, cpu: TrainConfig) -> TrainConfig:
        """The ``quick`` profile: the cpu recipe shrunk to a first champion in minutes.

        Time-budgeted, so its length does not depend on the CPU; what the CPU changes is
        how far it gets. The network is the cpu one at half the width (16-32-64-128 filters,
        dense 128) with one convolution per block instead of two, and the augmentation is
        the crop and the flip alone: on a 2-core AVX2-only CPU this trains about six passes
        in the budget, where the two-convolution network with the full augmentation trained
        two and scored 6 points lower (docs/experiments.md, r26-r27). Epochs of a fifth of
        the data give the budget, the cosine schedule and validation a grain of seconds;
        BatchNorm statistics with momentum 0.9 settle within the few hundred steps. No warm
        start: it is the first model.
        """
        augment = cpu.network.augment.model_copy(
            update={"zoom": 0.0, "rotate_degrees": 0.0, "contrast": 0.0}
        )
        network = cpu.network.model_copy(
            update={
                "filters": (16, 32, 64, 128),
                "convs_per_block": 1,
                "dense_units": 128,
                "batch_norm_momentum": 0.9,
                "augment": augment,
            }
        )
        return cpu.model_copy(
            update={
                "epochs": 1000,
                "epoch_fraction": 0.2,
                "time_budget_minutes": 4,
                "warm_start": False,
                "network": network,
            }
        )

    @classmethod
    def _gpu(cls, cpu: TrainConfig) -> TrainConfig:
        """The ``gpu`` profile: the cpu recipe scaled up for one GPU and a few minutes.

        A BatchNorm VGG twice as wide (64-128-256-512, ~5M parameters, small enough to ship
        with float16 weights), trained for up to 300 epochs in a 6-minute budget, as the
        published recipes that reach the best FER2013 accuracies train 250-300. Batch 512 with
        the learning rate scaled linearly (0.05 at 128 -> 0.2) and weight decay scaled down so
        the shrink per step (learning rate x decay) stays the cpu recipe's. Longer training
        takes stronger augmentation (rotation 15, zoom 0.15, random erasing p 0.5) and dense
        dropout 0.5. bfloat16 where the GPU has it, and ten-crop test-time averaging.
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
