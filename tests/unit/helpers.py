"""Tiny synthetic FER-layout datasets for unit tests."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from model.contract import CLASSES, SPLITS
from model.data.dataset import ImageRecord, decode_into


def write_fer_tree(
    root: Path,
    per_class: int = 3,
    size: int = 48,
    mode: str = "L",
    classes: tuple[str, ...] = CLASSES,
) -> Path:
    """Write ``per_class`` images per class and split whose brightness encodes the class."""
    rng = np.random.default_rng(0)
    for split in SPLITS:
        for index, label in enumerate(classes):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(per_class):
                base = 20 + 30 * index
                pixels = np.clip(rng.normal(base, 5, (size, size)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels, "L").convert(mode)
                image.save(folder / f"{split}_{label}_{n}.png")
    return root


def scan(root: Path, workers: int | None = None) -> list[ImageRecord]:
    """The records indexing makes of ``root`` (decoded into a scratch folder, then dropped)."""
    with tempfile.TemporaryDirectory(prefix="fer-scan-") as scratch:
        return decode_into(root, Path(scratch), workers=workers)
