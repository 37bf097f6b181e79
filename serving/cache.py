"""Serving's local model cache: what was last served (verified), and keeping it small.

The cache holds ``<cache>/<version>/<file>`` hard-linked to ``<cache>/blobs/<sha256>``
(see :meth:`model.registry.store.ModelRegistry.download_file`) and ``served.json``, the record of
the last model that was verified and swapped in; from it the app can start while the store is down.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

from model.contract import MODEL_FILE
from model.files import sha256_file, write_text_atomic

logger = logging.getLogger(__name__)

RECORD_FILE = "served.json"
BLOBS = "blobs"


@dataclass(frozen=True)
class ServedRecord:
    """The last model served: its version, the sha256 of each file, its test accuracy."""

    version: str
    files: dict[str, str]
    accuracy: float | None = None


def remember_served(cache_dir: Path, record: ServedRecord) -> None:
    """Record the model just swapped in, for a start while the store is down."""
    write_text_atomic(cache_dir / RECORD_FILE, json.dumps(asdict(record), indent=2))


def cached_model(cache_dir: Path) -> tuple[Path, ServedRecord] | None:
    """The last served model's file, if it is still in the cache and every file verifies.

    Returns:
        Its ``model.keras`` path and record, or None (nothing recorded, or a file missing or
        changed since: the reason is logged).
    """
    try:
        record = ServedRecord(**json.loads((cache_dir / RECORD_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:
        logger.warning("ignoring unreadable %s: %s", cache_dir / RECORD_FILE, error)
        return None
    for name, digest in record.files.items():
        path = cache_dir / record.version / name
        if not path.is_file() or sha256_file(path) != digest:
            logger.warning("cached %s does not verify; it will not be served", path)
            return None
    return cache_dir / record.version / MODEL_FILE, record


def prune_cache(cache_dir: Path, keep: Collection[str]) -> list[str]:
    """Delete cached versions other than ``keep`` and every blob no kept version uses.

    Args:
        cache_dir: serving's model cache.
        keep: versions to keep (the current and the previous champion).

    Returns:
        The versions deleted.
    """
    used: set[str] = set()
    removed = []
    for entry in sorted(cache_dir.iterdir()):
        if not entry.is_dir() or entry.name == BLOBS:
            continue
        if entry.name in keep:
            used |= {sha256_file(path) for path in entry.iterdir() if path.is_file()}
        else:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    for blob in (cache_dir / BLOBS).glob("*"):
        if blob.name not in used:
            blob.unlink(missing_ok=True)
    if removed:
        logger.info("model cache: removed %s", ", ".join(removed))
    return removed
