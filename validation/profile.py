"""The dataset as tables that Great Expectations can check.

GX has no image type, so a dataset becomes three DataFrames:

* :func:`image_table`: one row per image file, the manifest plus decoded facts (decodes?,
  pixel hash and standard deviation) and per-image flags: near-blank, a repeat of an earlier
  image's pixels, part of a label-conflicting group, and a test image leaked from train;
* :func:`class_table`: one row per class: folder present?, count and share in each split, and
  how far the test share is from the train share;
* :func:`summary_table`: one row of dataset-wide figures (totals, imbalance ratio, leakage,
  copies, near-blank images).

The data are checked as they came; what the clean step then removes from train is its own
report (:mod:`model.data.cleaning`).

A flag that does not apply to a row (leakage of a training image, say) is left empty: GX skips
missing values, so ``mostly`` bounds are fractions of the rows the flag applies to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model.contract import CLASSES, SPLITS
from model.data.cleaning import PixelRecord, duplicate_stats
from model.data.dataset import ImageRecord, class_folders


@dataclass(frozen=True)
class DatasetProfile:
    """A dataset's tables."""

    images: pd.DataFrame
    classes: pd.DataFrame
    summary: pd.DataFrame


def _flag(values: Sequence[bool | None]) -> pd.Series:
    # Object dtype with None for "does not apply": GX's pandas engine treats None as missing.
    return pd.Series(list(values), dtype=object)


def image_table(
    records: Sequence[ImageRecord],
    pixels: Sequence[PixelRecord],
    near_blank_std: float,
) -> pd.DataFrame:
    """One row per image: manifest columns, decoded facts and quality flags.

    Args:
        records: the manifest.
        pixels: decoded facts of the images of known classes (:func:`pixel_records`).
        near_blank_std: pixel standard deviation below which an image is near-blank.

    Returns:
        Columns ``split label relpath sha256 bytes decodes width height mode pixel_sha256
        pixel_std near_blank repeats_earlier label_conflict leaked_from_train``.
        Size and mode are missing for files that do not decode; pixel facts and flags are
        missing for those and for images outside the known classes.
    """
    facts = {(p.split, p.relpath): p for p in pixels}
    conflicting = _conflicting_digests(pixels)
    train_pixels = {p.pixel_sha256 for p in pixels if p.split == "train" and p.pixel_sha256}

    rows = []
    seen: set[str] = set()
    for record in records:
        fact = facts.get((record.split, record.relpath))
        row = _image_row(record, fact)
        # Flags apply only to decoded images of known classes; elsewhere they stay missing.
        if fact is not None and fact.pixel_sha256:
            digest = fact.pixel_sha256
            row["near_blank"] = fact.pixel_std < near_blank_std
            row["repeats_earlier"] = digest in seen
            row["label_conflict"] = digest in conflicting
            seen.add(digest)
            if record.split == "test":
                row["leaked_from_train"] = digest in train_pixels
        rows.append(row)
    return _image_frame(rows)


def _conflicting_digests(pixels: Sequence[PixelRecord]) -> set[str]:
    """Pixel hashes shared by images that carry more than one label.

    Args:
        pixels: decoded facts of the images.

    Returns:
        The hashes of label-conflicting groups (images without a hash are left out).
    """
    labels: dict[str, set[str]] = {}
    for p in pixels:
        if p.pixel_sha256:
            labels.setdefault(p.pixel_sha256, set()).add(p.label)
    return {digest for digest, group in labels.items() if len(group) > 1}


def _image_row(record: ImageRecord, fact: PixelRecord | None) -> dict[str, object]:
    """One image's manifest columns and decoded facts, with every flag still missing.

    Args:
        record: the image's manifest entry.
        fact: its decoded facts, or ``None`` when it has none (outside the known classes).

    Returns:
        The row, keyed in :data:`_IMAGE_COLUMNS` order.
    """
    digest = fact.pixel_sha256 if fact else ""
    return {
        "split": record.split,
        "label": record.label,
        "relpath": record.relpath,
        "sha256": record.sha256,
        "bytes": record.bytes,
        "decodes": record.decodes,
        # The manifest's size and mode of a file that does not decode mean nothing.
        "width": record.width if record.decodes else None,
        "height": record.height if record.decodes else None,
        "mode": record.mode if record.decodes else None,
        "pixel_sha256": digest or None,
        "pixel_std": fact.pixel_std if fact and digest else np.nan,
        "near_blank": None,
        "repeats_earlier": None,
        "label_conflict": None,
        "leaked_from_train": None,
    }


def _image_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """The image table from its rows, with the column dtypes GX checks rely on.

    Args:
        rows: one dict per image (:func:`_image_row`, flags filled in).

    Returns:
        The table: nullable integer sizes, float ``pixel_std`` and object-dtype flags.
    """
    table = pd.DataFrame(rows, columns=list(_IMAGE_COLUMNS))
    # Nullable integers keep the sizes whole where files that do not decode leave gaps.
    for column in ("width", "height"):
        table[column] = table[column].astype("Int64")
    for column in _FLAG_COLUMNS:
        table[column] = _flag(table[column].tolist())
    table["pixel_std"] = table["pixel_std"].astype(float)
    return table


_FLAG_COLUMNS = (
    "near_blank",
    "repeats_earlier",
    "label_conflict",
    "leaked_from_train",
)
_IMAGE_COLUMNS = (
    "split",
    "label",
    "relpath",
    "sha256",
    "bytes",
    "decodes",
    "width",
    "height",
    "mode",
    "pixel_sha256",
    "pixel_std",
    *_FLAG_COLUMNS,
)


def class_table(
    records: Sequence[ImageRecord], folders: set[tuple[str, str]], classes: Sequence[str]
) -> pd.DataFrame:
    """One row per class: folder present?, image count and share per split, share shift.

    Args:
        records: the manifest.
        folders: the (split, class) folders that exist (:func:`class_folders`).
        classes: the expected classes, in label order.

    Returns:
        Rows for the expected classes in order, then for unexpected class folders (sorted).
        Columns ``label expected`` and per split ``<split>_present <split>_count
        <split>_share``, then ``share_shift``: |test share - train share|. Counts and shares
        are missing where a folder is; shares are over the expected classes.
    """
    counts = Counter((r.split, r.label) for r in records)
    found = {label for _, label in folders} | {label for _, label in counts}
    labels = list(classes) + sorted(found - set(classes))
    totals = {
        split: sum(counts[(split, label)] for label in classes if (split, label) in folders)
        for split in SPLITS
    }
    rows = []
    for label in labels:
        expected = label in classes
        row: dict[str, object] = {"label": label, "expected": expected}
        for split in SPLITS:
            present = (split, label) in folders
            count = counts[(split, label)] if present else None
            # Presence is asked of the expected classes only; an extra folder is its own check.
            row[f"{split}_present"] = present if expected else None
            row[f"{split}_count"] = count
            row[f"{split}_share"] = (
                count / totals[split]
                if count is not None and label in classes and totals[split]
                else np.nan
            )
        row["share_shift"] = abs(row["test_share"] - row["train_share"])  # type: ignore[operator]
        rows.append(row)
    table = pd.DataFrame(rows)
    for split in SPLITS:
        table[f"{split}_count"] = table[f"{split}_count"].astype("Int64")
        table[f"{split}_present"] = _flag(table[f"{split}_present"].tolist())
    return table


def summary_table(
    images: pd.DataFrame,
    classes: pd.DataFrame,
    pixels: Sequence[PixelRecord],
    near_blank_std: float,
) -> pd.DataFrame:
    """One row of dataset-wide figures.

    Args:
        images: :func:`image_table`.
        classes: :func:`class_table`.
        pixels: decoded facts (for the duplicate and leakage figures).
        near_blank_std: the near-blank threshold.

    Returns:
        Columns: images per split, ``imbalance_ratio`` (largest/smallest train class of the
        expected ones; missing when one is empty or absent), the raw duplicate and leakage
        figures and the near-blank images.
    """
    expected = classes[classes["expected"]]
    train_counts = expected["train_count"]
    smallest = train_counts.min(skipna=False) if len(train_counts) else 0
    ratio = (
        float(train_counts.max() / smallest)
        if len(train_counts) and not pd.isna(smallest) and smallest > 0
        else np.nan
    )
    stats = duplicate_stats(pixels, near_blank_std)
    test_images = int((images["split"] == "test").sum())
    row: dict[str, object] = {
        "train_images": int((images["split"] == "train").sum()),
        "test_images": test_images,
        "undecodable_images": int((~images["decodes"]).sum()),
        "imbalance_ratio": ratio,
        "duplicate_groups": stats.groups,
        "extra_copies": stats.extra_copies,
        "cross_split_groups": stats.cross_split_groups,
        "leaked_test_images": stats.leaked_test_images,
        "leaked_test_fraction": stats.leaked_test_images / test_images if test_images else 0.0,
        "conflicting_label_groups": stats.conflicting_label_groups,
        "near_blank_images": stats.near_blank,
    }
    return pd.DataFrame([row])


def profile_dataset(
    root: Path,
    records: Sequence[ImageRecord],
    pixels: Sequence[PixelRecord],
    near_blank_std: float,
    classes: Sequence[str] = CLASSES,
) -> DatasetProfile:
    """Build the three tables of a dataset.

    Args:
        root: the dataset folder (for its class folders, empty ones included).
        records: its manifest.
        pixels: decoded facts (:func:`model.data.cleaning.pixel_records`).
        near_blank_std: pixel standard deviation below which an image is near-blank.
        classes: expected classes.

    Returns:
        The profile.
    """
    images = image_table(records, pixels, near_blank_std)
    classes_frame = class_table(records, class_folders(root), classes)
    summary = summary_table(images, classes_frame, pixels, near_blank_std)
    return DatasetProfile(images, classes_frame, summary)
