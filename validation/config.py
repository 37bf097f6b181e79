"""Bounds of the data-quality suites: one typed, frozen config with documented defaults.

The defaults are set from the real FER2013 copy: it passes every critical check with room to
spare, and faults an order of magnitude worse than what it shows fail (its figures and the
faults tried: docs/data.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.contract import NEAR_BLANK_STD
from model.errors import ConfigError


class QualityConfig(BaseModel):
    """Bounds of the data-quality expectations (critical ones fail the run, warnings report).

    Attributes are the expectations' parameters; see each field's description.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_size: int = Field(48, ge=1, description="Expected width and height in pixels.")
    min_train_images: int = Field(
        10_000, ge=1, description="Critical: fewest training images (FER2013: 28,709)."
    )
    min_test_images: int = Field(
        1_000, ge=1, description="Critical: fewest test images (FER2013 public test: 3,589)."
    )
    max_images: int = Field(
        2_000_000, ge=1, description="Critical: most images in one split (guards a wrong root)."
    )
    min_class_train_images: int = Field(
        100, ge=1, description="Critical: fewest training images of one class (disgust: 436)."
    )
    min_class_test_images: int = Field(
        20, ge=1, description="Critical: fewest test images of one class (disgust: 56)."
    )
    min_class_share: float = Field(
        0.005, ge=0, le=1, description="Critical: smallest share of train one class may have."
    )
    max_class_share: float = Field(
        0.40, ge=0, le=1, description="Critical: largest share of train one class may have."
    )
    max_imbalance_ratio: float = Field(
        40.0,
        ge=1,
        description="Critical: largest/smallest train class count (FER2013: 16.5; a 10x "
        "worse split, 165, fails).",
    )
    share_shift_warning: float = Field(
        0.03,
        ge=0,
        le=1,
        description="Warning: a class's test share differs from its train share by more.",
    )
    share_shift_critical: float = Field(
        0.10,
        ge=0,
        le=1,
        description="Critical: a class's test share differs from its train share by more.",
    )
    max_leaked_test_fraction: float = Field(
        0.10,
        ge=0,
        le=1,
        description="Critical: largest fraction of test images whose pixels also occur in "
        "train before cleaning (above it the source is broken); any leak is a warning.",
    )
    max_extra_copy_fraction: float = Field(
        0.20,
        ge=0,
        le=1,
        description="Critical: largest fraction of images that repeat an earlier image's "
        "pixels; any copy is a warning.",
    )
    near_blank_std: float = Field(
        NEAR_BLANK_STD,
        ge=0,
        description="Pixel standard deviation below which an image counts as near-blank (the "
        "clean step's default threshold too).",
    )
    max_near_blank_fraction: float = Field(
        0.005,
        ge=0,
        le=1,
        description="Critical: largest fraction of near-blank images (pixel std below the "
        "cleaning threshold); any is a warning.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_class_share > self.max_class_share:
            raise ValueError("min_class_share must not exceed max_class_share")
        if self.share_shift_warning > self.share_shift_critical:
            raise ValueError("share_shift_warning must not exceed share_shift_critical")
        return self


def read_quality_config(path: Path | None) -> QualityConfig:
    """Read the data-quality bounds from a JSON file, or return the defaults.

    Args:
        path: a JSON file of QualityConfig fields; None for the defaults.

    Raises:
        ConfigError: the file cannot be read or is not a valid QualityConfig, naming the field.
    """
    if path is None:
        return QualityConfig()
    try:
        return QualityConfig.model_validate_json(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read --quality-config {path}: {error.strerror}") from error
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigError(
            f"--quality-config {path} is not a valid QualityConfig ({problems}); "
            "see docs/data.md for the fields"
        ) from error
