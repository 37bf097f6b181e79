"""Task: make the dataset available locally and fingerprint it."""

from __future__ import annotations

from prefect import get_run_logger, task

from model.contract import DatasetRef
from model.data.sources import acquire_dataset
from tasks.common import retrying, settings


@task(
    name="acquire_dataset",
    # A flaky download or store outage is retried; a bad URI or a broken archive fails at once.
    **retrying(3, first_delay_seconds=15),
    timeout_seconds=3600,
)
def acquire_dataset_task(source: str) -> DatasetRef:
    """Acquire and index the dataset named by ``source`` (see ``model.data.sources``)."""
    ref = acquire_dataset(source, settings())
    get_run_logger().info("dataset %s at %s, fingerprint %s", source, ref.root, ref.fingerprint)
    return ref
