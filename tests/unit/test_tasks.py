"""Task policies: every task has a timeout, the network-facing ones back off, the validation
cache key follows the data and the bounds."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from prefect import Task

import tasks
from model.contract import DatasetRef
from tasks.validate import validation_cache_key
from validation.config import QualityConfig

pytestmark = pytest.mark.unit


def _all_tasks() -> dict[str, Task]:
    found = {}
    for module in pkgutil.iter_modules(tasks.__path__):
        loaded = importlib.import_module(f"tasks.{module.name}")
        for value in vars(loaded).values():
            if isinstance(value, Task):
                found[value.name] = value
    return found


def test_every_task_has_a_timeout() -> None:
    found = _all_tasks()
    assert {"acquire_dataset", "validate_dataset", "check_data_quality", "train_model"} <= set(
        found
    )
    assert {"evaluate_model", "check_gate", "publish_model", "promote_version"} <= set(found)
    assert all(task.timeout_seconds for task in found.values()), {
        name: task.timeout_seconds for name, task in found.items()
    }


@pytest.mark.parametrize("name", ["acquire_dataset", "publish_model", "promote_version"])
def test_network_facing_tasks_retry_with_growing_delays(name: str) -> None:
    task = _all_tasks()[name]
    assert task.retries >= 3 and task.retry_jitter_factor
    delays = list(task.retry_delay_seconds)
    assert delays == sorted(delays) and delays[-1] >= 4 * delays[0], delays


def test_validation_cache_key_follows_data_bounds_and_store_not_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FER_HOME", str(tmp_path / "a"))

    def key(fingerprint: str = "f" * 64, **bounds: int) -> str:
        ref = DatasetRef(tmp_path, fingerprint, tmp_path / "manifest.csv", str(tmp_path))
        parameters = {
            "ref": ref,
            "config": QualityConfig(**bounds),
        }
        return validation_cache_key(None, parameters)  # type: ignore[arg-type]

    assert key() == key()
    assert key("e" * 64) != key()
    assert key(min_train_images=100) != key()
    before = key()
    monkeypatch.setenv("FER_HOME", str(tmp_path / "b"))
    assert key() == before  # another worker's home reuses it from the store
    monkeypatch.setenv("FER_S3_BUCKET", "another-bucket")
    assert key() != before  # another store cannot see the report it points at
