"""FER layout: scanning, the per-image manifest, the dataset fingerprint and cached arrays."""

from __future__ import annotations

import csv
import hashlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from model.contract import CLASSES, IMAGE_SIZE, IMAGE_SUFFIXES, SPLITS, DatasetRef
from model.errors import DatasetError
from model.files import write_text_atomic

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
#: Manifest ``mode`` of files that do not decode: not an image at all, or cut short (a
#: decoder fills the missing part of a truncated JPEG with gray and only warns).
UNDECODABLE_MODES: tuple[str, ...] = ("unreadable", "truncated")


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

    @property
    def decodes(self) -> bool:
        """True when the file decodes completely into an image."""
        return self.mode not in UNDECODABLE_MODES


#: Folders that archive tools add and that are never part of a dataset.
_IGNORED_DIRS = frozenset({"__macosx"})


class FileEntry(NamedTuple):
    """An image file found by listing, before it is read (a tuple: 32k of them are made)."""

    split: str
    label: str
    relpath: str
    size: int
    mtime_ns: int


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name.lower() not in _IGNORED_DIRS
    )


def _split_dirs(folder: Path) -> dict[str, Path]:
    """The split folders of ``folder``, matched case-insensitively (``Train/`` is ``train``)."""
    return {p.name.lower(): p for p in _subdirs(folder) if p.name.lower() in SPLITS}


def find_layout_root(folder: Path) -> Path:
    """Locate the folder that holds ``train/`` and ``test/``.

    Accepts the layout at ``folder`` itself or nested under one top folder
    (``archive/train/...``), as Kaggle archives often are; folder names match in any case.

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
    for candidate in [folder, *_subdirs(folder)]:
        if len(_split_dirs(candidate)) == len(SPLITS):
            return candidate
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:20]
    raise DatasetError(
        f"{folder} is not in FER layout: expected folders {', '.join(s + '/' for s in SPLITS)} "
        f"(each with one folder per class: {', '.join(CLASSES)}), found {found or 'nothing'}; "
        "point FER_DATASET at the folder that holds train/ and test/"
    )


def class_folders(root: Path) -> set[tuple[str, str]]:
    """The (split, class) folders under ``root``, empty ones included, names in lower case.

    Args:
        root: folder holding the split folders.

    Returns:
        One pair per class folder.
    """
    return {
        (split, class_dir.name.lower())
        for split, split_dir in _split_dirs(root).items()
        for class_dir in _subdirs(split_dir)
    }


def list_images(root: Path) -> list[FileEntry]:
    """List every image file under ``root``'s split folders, with size and modification time.

    Class folders are matched case-insensitively and reported in lower case.

    Args:
        root: folder holding the split folders.

    Returns:
        Entries sorted by (split, label, relative path).
    """
    entries: list[FileEntry] = []
    for split, split_dir in _split_dirs(root).items():
        for class_dir in _subdirs(split_dir):
            label = class_dir.name.lower()
            prefix = f"{split_dir.name}/{class_dir.name}/"
            with os.scandir(class_dir) as items:
                for item in items:
                    if os.path.splitext(item.name)[1].lower() in IMAGE_SUFFIXES and item.is_file():
                        stat = item.stat()
                        entries.append(
                            FileEntry(
                                split, label, prefix + item.name, stat.st_size, stat.st_mtime_ns
                            )
                        )
    entries.sort()  # tuple order: (split, label, relpath)
    return entries


_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
#: Below this many files, decoding in-process beats starting worker processes.
IN_PROCESS_BELOW = 2000


def _to_gray48(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code) if image.shape[2] in (3, 4) else image[..., 0]
    if image.shape != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image.astype(np.uint8, copy=False)


def _read_file(path: str, size: int) -> bytes:
    # os.open/os.read with the listed size: a buffered file object, or reading to EOF, costs
    # more than the read itself for these ~1.5 KB files.
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, size + 1)
        if len(data) == size:
            return data
        chunks = [data]  # the file changed size since listing: read the rest
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _is_complete(data: bytes) -> bool:
    """Tell whether an image file is whole: False when it was cut short.

    A JPEG needs an end-of-image marker after its last scan, a PNG its IEND chunk; a partial
    download or copy has neither, yet decoders fill the rest with gray and only warn.
    """
    if data.startswith(b"\xff\xd8"):
        # Markers cannot occur inside entropy-coded data (0xFF is stuffed), so the last SOS is
        # the main image's last scan; an EXIF thumbnail's EOI comes before it, trailers after.
        return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda")
    if data.startswith(b"\x89PNG"):
        return data.rfind(b"IEND") > 0
    return True


def _describe_chunk(
    root: str, files: list[tuple[str, int]], size: int, out_path: str, offset: int
) -> list[tuple[str, int, int, int, str]]:
    """Read, hash and decode a chunk of files (runs in a worker process).

    Pixels go straight into rows ``offset:offset + len(files)`` of the ``.npy`` memory map at
    ``out_path`` (shared with the parent, so the arrays are never pickled between processes).

    Returns:
        Per file: (sha256, bytes, width, height, mode).
    """
    import cv2

    cv2.setNumThreads(1)  # one decode per worker; the pool provides the parallelism
    pixels = np.load(out_path, mmap_mode="r+")
    # Hot loop over ~1.5 KB files: bound names and a fast path for 48x48 gray JPEGs.
    imdecode, frombuffer, sha256, uint8 = cv2.imdecode, np.frombuffer, hashlib.sha256, np.uint8
    facts: list[tuple[str, int, int, int, str]] = []
    for index, (relpath, nbytes) in enumerate(files, start=offset):
        data = _read_file(f"{root}/{relpath}", nbytes)
        digest = sha256(data).hexdigest()
        image = imdecode(frombuffer(data, uint8), cv2.IMREAD_UNCHANGED)
        if image is None or image.size == 0:
            # Recorded, not raised: the data-quality suite reports every bad file at once.
            facts.append((digest, len(data), 0, 0, "unreadable"))
            continue
        if not _is_complete(data):
            facts.append((digest, len(data), image.shape[1], image.shape[0], "truncated"))
            continue
        channels = 1 if image.ndim == 2 else image.shape[2]
        mode = "I;16" if image.dtype == np.uint16 else _MODES.get(channels, f"{channels}ch")
        facts.append((digest, len(data), image.shape[1], image.shape[0], mode))
        if mode == "L" and image.shape == (size, size):
            pixels[index, :, :, 0] = image
        else:
            pixels[index, :, :, 0] = _to_gray48(image, size)
    pixels.flush()
    return facts


def _pool(workers: int) -> ProcessPoolExecutor:
    # fork is the cheapest start but unsafe once other threads exist (Prefect's engine runs
    # some); forkserver is safe there and costs ~0.3 s more.
    import cv2  # noqa: F401 - imported once here, inherited by every worker

    method = "fork" if threading.active_count() == 1 else "forkserver"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["cv2", "numpy", "model.data.dataset"])
    return ProcessPoolExecutor(workers, mp_context=context)


def _pixels_path(folder: Path, split: str) -> Path:
    return folder / f"{split}_x.npy"


def _labels_path(folder: Path, split: str) -> Path:
    return folder / f"{split}_y.npy"


def _decode_jobs(
    entries: Sequence[FileEntry], out_dir: Path, step: int
) -> list[tuple[list[tuple[str, int]], str, int]]:
    """Cut the listing into chunks that each fall within one split: (files, npy path, row)."""
    jobs = []
    for split in sorted(SPLITS):  # the listing's order, so results line up with entries
        files = [(e.relpath, e.size) for e in entries if e.split == split]
        path = _pixels_path(out_dir, split)
        np.lib.format.open_memmap(
            path, mode="w+", dtype=np.uint8, shape=(len(files), IMAGE_SIZE, IMAGE_SIZE, 1)
        ).flush()
        jobs += [(files[i : i + step], str(path), i) for i in range(0, len(files), step)]
    return jobs


def decode_into(
    root: Path,
    out_dir: Path,
    entries: Sequence[FileEntry] | None = None,
    workers: int | None = None,
) -> list[ImageRecord]:
    """Hash, describe and decode every image under ``root`` in parallel, reading each file once.

    Pixels are written straight into ``<out_dir>/<split>_x.npy`` (uint8, N x 48 x 48 x 1, in
    listing order within the split) by the worker processes, never copied between processes.

    Args:
        root: folder holding ``train/`` and ``test/``.
        out_dir: existing folder for the pixel files.
        entries: the listing, if the caller already has it.
        workers: processes; default one per core. Small datasets are done in-process.

    Returns:
        The records, sorted like the listing (by split, class, relative path).

    Raises:
        DatasetError: if the folder holds no images at all.
    """
    entries = sorted(list_images(root) if entries is None else entries)
    if not entries:
        raise DatasetError(
            f"no images (*.jpg, *.jpeg, *.png) under {root}/train or {root}/test; "
            "check FER_DATASET points at a complete FER2013 copy"
        )
    workers = workers or os.cpu_count() or 1
    in_process = workers == 1 or len(entries) < IN_PROCESS_BELOW
    jobs = _decode_jobs(
        entries, out_dir, len(entries) if in_process else -(-len(entries) // (4 * workers))
    )
    if in_process:
        facts = [
            f
            for files, path, row in jobs
            for f in _describe_chunk(str(root), files, IMAGE_SIZE, path, row)
        ]
    else:
        with _pool(workers) as pool:
            futures = [
                pool.submit(_describe_chunk, str(root), files, IMAGE_SIZE, path, row)
                for files, path, row in jobs
            ]
            progress = tqdm(futures, desc="decode", unit="chunk", disable=None, leave=False)
            facts = [fact for future in progress for fact in future.result()]
    return [
        ImageRecord(e.split, e.label, e.relpath, sha, nbytes, width, height, mode)
        for e, (sha, nbytes, width, height, mode) in zip(entries, facts, strict=True)
    ]


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
        # Plain tuples: dataclasses.astuple deep-copies, far slower on 32k rows.
        writer.writerows(
            (r.split, r.label, r.relpath, r.sha256, r.bytes, r.width, r.height, r.mode)
            for r in records
        )
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


def arrays_dir(home: Path) -> Path:
    """Where decoded arrays are cached, one ``<fingerprint>/`` folder per dataset."""
    return home / "cache" / "arrays"


def _listing_key(root: Path, entries: Sequence[FileEntry]) -> str:
    lines = "".join(f"{e.relpath}\t{e.size}\t{e.mtime_ns}\n" for e in entries)
    return hashlib.sha256(f"{root}\n{lines}".encode()).hexdigest()


def _decode_to_cache(
    root: Path, cache_dir: Path, entries: Sequence[FileEntry] | None, workers: int | None
) -> tuple[list[ImageRecord], str]:
    """Decode into ``<cache_dir>/<fingerprint>/`` atomically; returns records and fingerprint.

    Pixels and labels go to a temporary sibling, renamed into place once complete.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".decoding-", dir=cache_dir))
    try:
        records = decode_into(root, tmp, entries, workers)
        for split in SPLITS:
            labels = [
                CLASSES.index(r.label) if r.label in CLASSES else -1
                for r in records
                if r.split == split
            ]
            np.save(_labels_path(tmp, split), np.array(labels, dtype=np.int64))
        fingerprint = compute_fingerprint(records)
        if not (cache_dir / fingerprint).exists():
            try:
                os.replace(tmp, cache_dir / fingerprint)
            except OSError:
                pass  # another process cached the same fingerprint first; files are identical
        return records, fingerprint
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def index_dataset(root: Path, home: Path, source: str, workers: int | None = None) -> DatasetRef:
    """Index a FER-layout folder: manifest, fingerprint and decoded arrays, each made once.

    The listing's (path, size, mtime) is checked on every call; when it matches an earlier
    index, nothing is read or decoded again (the warm path). Otherwise every file is read once
    to hash, describe and decode it, and the manifest and the arrays are cached by fingerprint.

    Args:
        root: folder holding ``train/`` and ``test/`` (may be read-only).
        home: platform home; manifests go to ``<home>/datasets/<fingerprint>/``, arrays to
            :func:`arrays_dir`.
        source: what the user asked for, kept for lineage.
        workers: decoding processes (default: one per core).

    Returns:
        A reference that later stages use to load the data.
    """
    entries = list_images(root)
    pointer = home / "datasets" / "by-listing" / f"{_listing_key(root, entries)}.txt"
    if pointer.exists():
        fingerprint = pointer.read_text().strip()
        manifest_path = home / "datasets" / fingerprint / MANIFEST_NAME
        if manifest_path.exists() and (arrays_dir(home) / fingerprint).is_dir():
            logger.info("dataset at %s unchanged since indexed (%s)", root, fingerprint[:12])
            return DatasetRef(root, fingerprint, manifest_path, source)
    records, fingerprint = _decode_to_cache(root, arrays_dir(home), entries, workers)
    manifest_path = home / "datasets" / fingerprint / MANIFEST_NAME
    write_manifest(records, manifest_path)
    write_text_atomic(pointer, fingerprint)
    logger.info("indexed %d images under %s (fingerprint %s)", len(records), root, fingerprint)
    return DatasetRef(root, fingerprint, manifest_path, source)


def load_split(ref: DatasetRef, split: str, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load one split's decoded images and labels from the array cache.

    The images are memory-mapped read-only from the cache (no copy until a consumer converts
    them); images of classes outside ``CLASSES`` are left out. A missing cache is rebuilt from
    the files, provided they still have the indexed fingerprint.

    Args:
        ref: the dataset.
        split: ``"train"`` or ``"test"``.
        cache_dir: the array cache (:func:`arrays_dir` of the platform home).

    Returns:
        ``(x, y)``: uint8 images N x 48 x 48 x 1 and int64 label indices into ``CLASSES``.

    Raises:
        DatasetError: if the split is unknown or empty, or the files changed since indexing.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
    folder = cache_dir / ref.fingerprint
    if not folder.is_dir():
        _, fingerprint = _decode_to_cache(ref.root, cache_dir, None, None)
        if fingerprint != ref.fingerprint:
            raise DatasetError(
                f"the dataset at {ref.root} changed since it was indexed as "
                f"{ref.fingerprint[:12]}; run the acquire step (retrain) again"
            )
    x = np.load(_pixels_path(folder, split), mmap_mode="r")
    y = np.load(_labels_path(folder, split))
    if (y < 0).any():
        keep = y >= 0
        x, y = x[keep], y[keep]
    if not len(y):
        raise DatasetError(f"{ref.root}/{split} holds no images of the classes {CLASSES}")
    return x, y
