"""Task: make the dataset available locally and fingerprint it."""

from __future__ import annotations

from prefect import get_run_logger, task

from model.dataset import DatasetRef
from model.sources import acquire_dataset
from tasks.common import retry_unless_platform_error, settings


@task(
    name="acquire_dataset",
    retries=2,
    retry_delay_seconds=30,
    retry_condition_fn=retry_unless_platform_error,
    timeout_seconds=3600,
)
def acquire_dataset_task(source: str) -> DatasetRef:
    """Acquire and index the dataset named by ``source`` (see ``model.sources``)."""
    ref = acquire_dataset(source, settings())
    get_run_logger().info("dataset %s at %s, fingerprint %s", source, ref.root, ref.fingerprint)
    return ref
