"""Serving's local model cache: the record of the last verified model, and pruning."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from serving.cache import ServedRecord, cached_model, prune_cache, remember_served

pytestmark = pytest.mark.unit


def _cache_version(cache: Path, version: str, files: dict[str, bytes]) -> dict[str, str]:
    """Lay a version out as the registry's download does: blobs, hard-linked by name."""
    digests = {}
    for name, content in files.items():
        digest = hashlib.sha256(content).hexdigest()
        blob = cache / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        (cache / version).mkdir(parents=True, exist_ok=True)
        os.link(blob, cache / version / name)
        digests[name] = digest
    return digests


def test_the_last_served_model_is_found_only_while_it_verifies(tmp_path: Path) -> None:
    files = {"model.keras": b"keras bytes", "serving.tflite": b"tflite bytes"}
    digests = _cache_version(tmp_path, "v1", files)
    assert cached_model(tmp_path) is None  # nothing served yet
    remember_served(tmp_path, ServedRecord("v1", digests, 0.61))
    path, record = cached_model(tmp_path)
    assert path == tmp_path / "v1" / "model.keras"
    assert record == ServedRecord("v1", digests, 0.61)
    # A file changed on disk since it was verified: nothing is served from the cache.
    (tmp_path / "v1" / "serving.tflite").write_bytes(b"changed")
    assert cached_model(tmp_path) is None


def test_an_unreadable_record_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "served.json").write_text("{not json")
    assert cached_model(tmp_path) is None


def test_pruning_keeps_the_current_and_previous_models_and_their_blobs(tmp_path: Path) -> None:
    old = _cache_version(tmp_path, "v1", {"model.keras": b"one"})
    previous = _cache_version(tmp_path, "v2", {"model.keras": b"two", "serving.tflite": b"t2"})
    # v3 shares its model file with v2 (the same bytes republished).
    current = _cache_version(tmp_path, "v3", {"model.keras": b"two", "serving.tflite": b"t3"})
    assert prune_cache(tmp_path, {"v2", "v3"}) == ["v1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "v2", "v3"]
    kept = {*previous.values(), *current.values()}
    assert {p.name for p in (tmp_path / "blobs").iterdir()} == kept
    assert old["model.keras"] not in kept
    assert (tmp_path / "v3" / "model.keras").read_bytes() == b"two"
