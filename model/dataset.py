"""FER layout: scanning, the per-image manifest, the dataset fingerprint and cached arrays."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from model.errors import DatasetError

logger = logging.getLogger(__name__)

#: Class names; this alphabetical order is the label index everywhere.
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_SIZE = 48
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class ImageRecord:
    """One image of the dataset as the manifest lists it."""

    split: str
    label: str
    relpath: str
    sha256: str
    bytes: int
    width: int
    height: int
    mode: str


@dataclass(frozen=True)
class DatasetRef:
    """A dataset on local disk, identified by its fingerprint.

    Attributes:
        root: folder in FER layout (``train/<class>/*``, ``test/<class>/*``).
        fingerprint: hash over (split, class, relative path, content hash) of every image.
        manifest_path: CSV with one ``ImageRecord`` per image.
        source: what the user asked for (path or URI), for lineage.
    """

    root: Path
    fingerprint: str
    manifest_path: Path
    source: str


def find_layout_root(folder: Path) -> Path:
    """Locate the folder that holds ``train/`` and ``test/``.

    Accepts the layout at ``folder`` itself or nested under one top folder
    (``archive/train/...``), as Kaggle archives often are.

    Args:
        folder: a local folder.

    Returns:
        The folder whose children are the splits.

    Raises:
        DatasetError: if no split folders are found; the message lists what was found.
    """
    if not folder.is_dir():
        raise DatasetError(
            f"dataset folder {folder} does not exist or is not a folder; "
            "set FER_DATASET to a folder in FER layout (train/<class>/*.jpg, test/<class>/*.jpg)"
        )
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
    for candidate in candidates:
        if all((candidate / split).is_dir() for split in SPLITS):
            return candidate
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:20]
    raise DatasetError(
        f"{folder} is not in FER layout: expected folders {', '.join(s + '/' for s in SPLITS)} "
        f"(each with one folder per class: {', '.join(CLASSES)}), found {found or 'nothing'}; "
        "point FER_DATASET at the folder that holds train/ and test/"
    )


def _list_images(root: Path) -> list[tuple[str, str, Path]]:
    items: list[tuple[str, str, Path]] = []
    for split in SPLITS:
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            label = class_dir.name.lower()
            for path in sorted(class_dir.iterdir()):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    items.append((split, label, path))
    return items


def _describe_image(root: Path, split: str, label: str, path: Path) -> ImageRecord:
    data = path.read_bytes()
    try:
        with Image.open(path) as image:
            width, height = image.size
            mode = image.mode
    except (UnidentifiedImageError, OSError):
        # Recorded, not raised: the data-quality suite reports every bad file at once.
        width, height, mode = 0, 0, "unreadable"
    return ImageRecord(
        split=split,
        label=label,
        relpath=path.relative_to(root).as_posix(),
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        width=width,
        height=height,
        mode=mode,
    )


def scan_dataset(root: Path, workers: int = 8) -> list[ImageRecord]:
    """Describe every image under ``root`` (a folder in FER layout).

    Args:
        root: folder holding ``train/`` and ``test/``.
        workers: threads reading files; the work is I/O and hashing.

    Returns:
        One record per image, sorted by (split, label, relative path).

    Raises:
        DatasetError: if the folder holds no images at all.
    """
    items = _list_images(root)
    if not items:
        raise DatasetError(
            f"no images (*.jpg, *.jpeg, *.png) under {root}/train or {root}/test; "
            "check FER_DATASET points at a complete FER2013 copy"
        )
    with ThreadPoolExecutor(max_workers=workers) as pool:
        records = list(pool.map(lambda item: _describe_image(root, *item), items))
    return sorted(records, key=lambda r: (r.split, r.label, r.relpath))


def compute_fingerprint(records: Iterable[ImageRecord]) -> str:
    """Hash the dataset's identity: (split, class, relative path, content hash) of every image.

    Args:
        records: the manifest rows, in any order.

    Returns:
        A 64-character hex digest; equal datasets give equal fingerprints.
    """
    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: (r.split, r.label, r.relpath)):
        digest.update(f"{r.split}\t{r.label}\t{r.relpath}\t{r.sha256}\n".encode())
    return digest.hexdigest()


def write_manifest(records: Sequence[ImageRecord], path: Path) -> None:
    """Write the manifest as CSV atomically (temp file, then rename).

    Args:
        records: rows to write.
        path: destination CSV.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", newline="", dir=path.parent, suffix=".tmp", delete=False
    ) as handle:
        writer = csv.writer(handle)
        writer.writerow([f.name for f in fields(ImageRecord)])
        writer.writerows(astuple(r) for r in records)
    os.replace(handle.name, path)


def read_manifest(path: Path) -> list[ImageRecord]:
    """Read a manifest written by :func:`write_manifest`.

    Args:
        path: the manifest CSV.

    Returns:
        The records, in file order.
    """
    with path.open(newline="") as handle:
        return [
            ImageRecord(
                split=row["split"],
                label=row["label"],
                relpath=row["relpath"],
                sha256=row["sha256"],
                bytes=int(row["bytes"]),
                width=int(row["width"]),
                height=int(row["height"]),
                mode=row["mode"],
            )
            for row in csv.DictReader(handle)
        ]


def index_dataset(root: Path, home: Path, source: str) -> DatasetRef:
    """Scan a FER-layout folder, store its manifest under the platform home, fingerprint it.

    Args:
        root: folder holding ``train/`` and ``test/`` (may be read-only).
        home: platform home; the manifest goes to ``<home>/datasets/<fingerprint>/``.
        source: what the user asked for, kept for lineage.

    Returns:
        A reference that later stages use to load the data.
    """
    records = scan_dataset(root)
    fingerprint = compute_fingerprint(records)
    manifest_path = home / "datasets" / fingerprint / MANIFEST_NAME
    if not manifest_path.exists():
        write_manifest(records, manifest_path)
    logger.info("indexed %d images under %s (fingerprint %s)", len(records), root, fingerprint)
    return DatasetRef(
        root=root, fingerprint=fingerprint, manifest_path=manifest_path, source=source
    )


def decode_image(path: Path, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode one image file to a ``size`` x ``size`` grayscale uint8 array.

    Args:
        path: an image file PIL can read.
        size: output side length.

    Returns:
        Array of shape (size, size).
    """
    with Image.open(path) as image:
        gray = image.convert("L")
        if gray.size != (size, size):
            gray = gray.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(gray, dtype=np.uint8)


def load_split(ref: DatasetRef, split: str, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load one split as arrays, decoding once and caching by fingerprint.

    Args:
        ref: the dataset.
        split: ``"train"`` or ``"test"``.
        cache_dir: where decoded arrays are kept (``<fingerprint>-<split>.npz``).

    Returns:
        ``(x, y)``: uint8 images N x 48 x 48 x 1 and int64 label indices into ``CLASSES``.

    Raises:
        DatasetError: if the split holds no image of a known class.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
    cache_path = cache_dir / f"{ref.fingerprint}-{split}.npz"
    if cache_path.exists():
        with np.load(cache_path) as cached:
            return cached["x"], cached["y"]
    records = [
        r for r in read_manifest(ref.manifest_path) if r.split == split and r.label in CLASSES
    ]
    if not records:
        raise DatasetError(f"{ref.root}/{split} holds no images of the classes {CLASSES}")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        images = list(pool.map(lambda r: decode_image(ref.root / r.relpath), records))
    x = np.stack(images)[..., np.newaxis]
    y = np.array([CLASSES.index(r.label) for r in records], dtype=np.int64)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npz", delete=False) as handle:
        np.savez(handle, x=x, y=y)
    os.replace(handle.name, cache_path)
    logger.info("decoded %d %s images of %s", len(y), split, ref.fingerprint[:12])
    return x, y
