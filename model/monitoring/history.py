"""The health reports' records in the model store, and the champion they report on.

Each report keeps a snapshot (``health/snapshots/<time>.json``: each replica's reading and the
window's predictions), so the next report counts only what is new and the week-over-week
comparison has the weeks before; its chart goes beside it (``health/charts/<time>.png``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from model.errors import RegistryError
from model.monitoring.report import Champion, Snapshot
from model.registry.store import ModelRegistry

logger = logging.getLogger(__name__)

SNAPSHOTS = "health/snapshots"
CHARTS = "health/charts"


def _stamp(time: datetime) -> str:
    return f"{time:%Y%m%dT%H%M%SZ}"


def save_snapshot(registry: ModelRegistry, snapshot: Snapshot) -> str:
    """Store a report's snapshot; returns its ``s3://`` URI."""
    return registry.put_json(f"{SNAPSHOTS}/{_stamp(snapshot.time)}.json", snapshot.to_json())


def save_chart(registry: ModelRegistry, path: Path, time: datetime) -> str:
    """Store a report's chart; returns its key (for a link, see ``presigned_url``)."""
    key = f"{CHARTS}/{_stamp(time)}.png"
    registry.upload_file(path, key)
    return key


def load_snapshots(registry: ModelRegistry, since: datetime) -> list[Snapshot]:
    """The snapshots taken after ``since``, oldest first.

    One that cannot be read is skipped with a warning: a report is still worth making
    without it.
    """
    found = []
    for key in registry.list_keys(f"{SNAPSHOTS}/"):
        name = key.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            taken = datetime.strptime(name, "%Y%m%dT%H%M%S%z")
        except ValueError:
            continue
        if taken <= since:
            continue
        stored = registry.get_json(key)
        try:
            found.append(Snapshot.from_json(stored[0]) if stored else None)
        except (KeyError, TypeError, ValueError) as error:
            logger.warning("skipping unreadable health snapshot %s: %s", registry.uri(key), error)
    return sorted((item for item in found if item is not None), key=lambda item: item.time)


def champion_of(registry: ModelRegistry) -> Champion | None:
    """The champion, when it was promoted and its test accuracy (None if not recorded)."""
    pointer = registry.champion()
    if pointer is None:
        return None
    try:
        accuracy = registry.read_manifest(pointer.version).get("metrics", {}).get("accuracy")
    except RegistryError as error:
        logger.warning("champion %s has no readable manifest: %s", pointer.version, error)
        accuracy = None
    return Champion(pointer.version, datetime.fromisoformat(pointer.promoted_at), accuracy)
