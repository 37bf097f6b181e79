"""Cleaning the training split: never train on a test image, a duplicate or a blank frame.

Identity is the hash of the decoded 48x48 gray pixels (from the array cache, not the files), so
the same picture saved twice, or in two formats, is one image. Test is never changed: it is the
yardstick every model is measured with.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from model.contract import CLASSES, NEAR_BLANK_STD, SPLITS, DatasetRef
from model.data.dataset import arrays_dir, load_split, read_manifest
from model.errors import DatasetError
from model.files import sha256_file, write_text_atomic

logger = logging.getLogger(__name__)

CLEANING_FILE = "cleaning.json"

#: Why a training image was left out, in the order the rules are applied.
REASONS = ("unreadable", "near_blank", "label_conflict", "in_test", "duplicate")


class PixelRecord(NamedTuple):
    """One decoded image: where it is, its label, and facts about its pixels."""

    split: str
    label: str
    relpath: str
    pixel_sha256: str
    pixel_std: float


def pixel_records(ref: DatasetRef, home: Path) -> list[PixelRecord]:
    """Hash and measure the decoded pixels of every image of a known class, both splits.

    Args:
        ref: the dataset.
        home: platform home (array cache).

    Returns:
        One record per image, in manifest order.

    Raises:
        DatasetError: if the array cache does not match the manifest.
    """
    records = read_manifest(ref.manifest_path)
    result: list[PixelRecord] = []
    for split in SPLITS:
        x, _ = load_split(ref, split, arrays_dir(home))
        rows = [r for r in records if r.split == split and r.label in CLASSES]
        if len(rows) != len(x):
            raise DatasetError(
                f"array cache of {ref.fingerprint[:12]} does not match its manifest; "
                f"delete {arrays_dir(home) / ref.fingerprint} and run retrain again"
            )
        for record, image in zip(rows, x, strict=True):
            pixels = np.ascontiguousarray(image)
            std = float(cv2.meanStdDev(pixels)[1][0, 0])
            unreadable = not record.decodes
            result.append(
                PixelRecord(
                    split,
                    record.label,
                    record.relpath,
                    "" if unreadable else hashlib.sha256(pixels).hexdigest(),
                    0.0 if unreadable else std,
                )
            )
    return result


class CleaningConfig(BaseModel):
    """Thresholds of the cleaning step."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    near_blank_std: float = Field(
        NEAR_BLANK_STD,
        ge=0,
        description="Images whose pixel standard deviation is below this are blank.",
    )


class DuplicateStats(BaseModel):
    """Identical-pixel groups in the raw dataset (all splits)."""

    model_config = ConfigDict(frozen=True)

    groups: int = Field(description="Groups of two or more images with identical pixels.")
    extra_copies: int = Field(description="Images beyond the first of each group.")
    cross_split_groups: int = Field(description="Groups with members in both train and test.")
    leaked_test_images: int = Field(description="Test images whose pixels also occur in train.")
    conflicting_label_groups: int = Field(description="Groups whose members carry 2+ labels.")
    near_blank: int = Field(description="Images (any split) below the near-blank threshold.")


class CleaningReport(BaseModel):
    """What cleaning found and what it removed from train (paths relative to the root)."""

    model_config = ConfigDict(frozen=True)

    stats: DuplicateStats
    train_before: int
    train_after: int
    removed: dict[str, list[str]]

    @property
    def removed_counts(self) -> dict[str, int]:
        """Removed training images per reason."""
        return {reason: len(paths) for reason, paths in self.removed.items()}


def _groups(records: Sequence[PixelRecord]) -> dict[str, list[PixelRecord]]:
    groups: dict[str, list[PixelRecord]] = defaultdict(list)
    for record in records:
        if record.pixel_sha256:
            groups[record.pixel_sha256].append(record)
    return groups


def duplicate_stats(records: Sequence[PixelRecord], near_blank_std: float) -> DuplicateStats:
    """Count identical-pixel groups, train/test leakage, label conflicts and blank images.

    Args:
        records: the dataset's manifest rows.
        near_blank_std: pixel standard deviation below which an image is near-blank.

    Returns:
        The raw figures, before any cleaning.
    """
    multi = [g for g in _groups(records).values() if len(g) > 1]
    crossing = [g for g in multi if {r.split for r in g} >= {"train", "test"}]
    return DuplicateStats(
        groups=len(multi),
        extra_copies=sum(len(g) - 1 for g in multi),
        cross_split_groups=len(crossing),
        leaked_test_images=sum(sum(r.split == "test" for r in g) for g in crossing),
        conflicting_label_groups=sum(len({r.label for r in g}) > 1 for g in multi),
        near_blank=sum(r.pixel_sha256 != "" and r.pixel_std < near_blank_std for r in records),
    )


def clean_train(records: Sequence[PixelRecord], config: CleaningConfig) -> CleaningReport:
    """Decide which training images to keep.

    Rules, in order: drop unreadable and near-blank images; drop every member of a group whose
    copies carry different labels; drop images whose pixels occur in test; of the remaining
    identical images keep the first (by path).

    Args:
        records: the dataset's manifest rows (all splits).
        config: thresholds.

    Returns:
        The report; ``removed`` maps each reason to the removed paths.
    """
    groups = _groups(records)
    test_pixels = {r.pixel_sha256 for r in records if r.split == "test" and r.pixel_sha256}
    conflicting = {sha for sha, g in groups.items() if len({r.label for r in g}) > 1}
    removed: dict[str, list[str]] = {reason: [] for reason in REASONS}
    kept_pixels: set[str] = set()
    train = sorted((r for r in records if r.split == "train"), key=lambda r: r.relpath)
    for record in train:
        if not record.pixel_sha256:
            reason = "unreadable"
        elif record.pixel_std < config.near_blank_std:
            reason = "near_blank"
        elif record.pixel_sha256 in conflicting:
            reason = "label_conflict"
        elif record.pixel_sha256 in test_pixels:
            reason = "in_test"
        elif record.pixel_sha256 in kept_pixels:
            reason = "duplicate"
        else:
            kept_pixels.add(record.pixel_sha256)
            continue
        removed[reason].append(record.relpath)
    report = CleaningReport(
        stats=duplicate_stats(records, config.near_blank_std),
        train_before=len(train),
        train_after=len(kept_pixels),
        removed=removed,
    )
    logger.info(
        "cleaning kept %d of %d training images; removed %s",
        report.train_after,
        report.train_before,
        report.removed_counts,
    )
    return report


class Cleaned(BaseModel):
    """The clean step's result: where its plan is, and what it kept (small; passed between tasks).

    Attributes:
        report_path: ``cleaning.json`` (every removed path per reason) beside the manifest.
        report_sha256: its hash, so a plan rewritten since (other thresholds) is refused.
        fingerprint: the dataset the plan is for.
        config: the thresholds it was made with.
        train_before: training images before cleaning.
        train_after: training images kept.
        removed_counts: removed training images per reason.
    """

    model_config = ConfigDict(frozen=True)

    report_path: Path
    report_sha256: str
    fingerprint: str
    config: CleaningConfig
    train_before: int
    train_after: int
    removed_counts: dict[str, int]


def verify_plan(records: Sequence[PixelRecord], report: CleaningReport) -> None:
    """Check the plan's guarantee independently of its rules: no kept image occurs in test.

    Args:
        records: the dataset's pixel facts (all splits).
        report: the plan made from them.

    Raises:
        DatasetError: naming the kept training images whose pixels occur in test.
    """
    test_pixels = {r.pixel_sha256 for r in records if r.split == "test" and r.pixel_sha256}
    removed = {path for paths in report.removed.values() for path in paths}
    kept_in_test = [
        r.relpath
        for r in records
        if r.split == "train" and r.relpath not in removed and r.pixel_sha256 in test_pixels
    ]
    if kept_in_test:
        shown = ", ".join(kept_in_test[:5]) + (" ..." if len(kept_in_test) > 5 else "")
        raise DatasetError(
            f"{len(kept_in_test)} training image(s) kept by cleaning have pixels that occur in "
            f"test ({shown}); this is a bug in the cleaning step: do not train on this dataset"
        )


def write_cleaning(report: CleaningReport, path: Path) -> None:
    """Store the report (with every removed path) as JSON, atomically.

    Args:
        report: the cleaning report.
        path: destination, normally ``<home>/datasets/<fingerprint>/cleaning.json``.
    """
    write_text_atomic(path, json.dumps(report.model_dump(), indent=1))


def read_cleaning(path: Path) -> CleaningReport:
    """Read a report written by :func:`write_cleaning`.

    Raises:
        DatasetError: the file is missing or not a cleaning report.
    """
    try:
        return CleaningReport.model_validate_json(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(
            f"cannot read the cleaning plan {path} ({error}); run the retrain again"
        ) from error


def plan_cleaning(ref: DatasetRef, home: Path, config: CleaningConfig) -> CleaningReport:
    """Decide which training images to keep and check the plan; nothing is written.

    Raises:
        DatasetError: the array cache does not match the manifest, or the plan kept a test image.
    """
    records = pixel_records(ref, home)
    report = clean_train(records, config)
    verify_plan(records, report)
    return report


def clean_dataset(ref: DatasetRef, home: Path, config: CleaningConfig) -> Cleaned:
    """The clean step: decide which training images to keep, check it, write the plan.

    Args:
        ref: the dataset (validated).
        home: platform home (array cache, dataset folder).
        config: cleaning thresholds.

    Returns:
        Where the plan is and what it kept.

    Raises:
        DatasetError: the array cache does not match the manifest, or the plan kept a test image.
    """
    report = plan_cleaning(ref, home, config)
    path = ref.manifest_path.with_name(CLEANING_FILE)
    write_cleaning(report, path)
    return Cleaned(
        report_path=path,
        report_sha256=sha256_file(path),
        fingerprint=ref.fingerprint,
        config=config,
        train_before=report.train_before,
        train_after=report.train_after,
        removed_counts=report.removed_counts,
    )


def cleaned_train_arrays(
    ref: DatasetRef, home: Path, cleaned: Cleaned
) -> tuple[np.ndarray, np.ndarray]:
    """The training split as the model may see it: what the clean step kept.

    Reads the plan, not the pixels: nothing is hashed again.

    Args:
        ref: the dataset.
        home: platform home (array cache).
        cleaned: the clean step's result for this dataset.

    Returns:
        ``(x, y)``: the kept images and labels.

    Raises:
        DatasetError: the plan is for another dataset or does not match its train split.
    """
    if cleaned.fingerprint != ref.fingerprint:
        raise DatasetError(
            f"the cleaning plan {cleaned.report_path} is for dataset {cleaned.fingerprint[:12]}, "
            f"not {ref.fingerprint[:12]}; clean this dataset first"
        )
    if (
        not cleaned.report_path.is_file()
        or sha256_file(cleaned.report_path) != cleaned.report_sha256
    ):
        raise DatasetError(
            f"the cleaning plan {cleaned.report_path} changed since the clean step wrote it "
            "(another run cleaned this dataset with other thresholds); run the retrain again"
        )
    report = read_cleaning(cleaned.report_path)
    x, y = load_split(ref, "train", arrays_dir(home))
    # load_split's rows are the manifest's train rows of known classes, in manifest order.
    records = read_manifest(ref.manifest_path)
    rows = [r.relpath for r in records if r.split == "train" and r.label in CLASSES]
    dropped = {path for paths in report.removed.values() for path in paths}
    keep = np.fromiter((path not in dropped for path in rows), dtype=bool, count=len(rows))
    if len(rows) != len(y) or int(keep.sum()) != report.train_after:
        raise DatasetError(
            f"the cleaning plan {cleaned.report_path} does not match the train split of "
            f"{ref.fingerprint[:12]}; run the retrain again"
        )
    return x[keep], y[keep]
