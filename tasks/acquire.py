"""Task: make the dataset available locally and fingerprint it."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from model.contract import DatasetRef
from model.data.sources import acquire_dataset
from tasks.common import retry_unless_platform_error, settings


@task(
    name="acquire_dataset",
    # A flaky download or store outage: wait 15, 30, 60 s (+-50 %) and retry; a bad URI or a
    # broken archive fails at once (platform errors are not retried).
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=15),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_platform_error,
    timeout_seconds=3600,
)
def acquire_dataset_task(source: str) -> DatasetRef:
    """Acquire and index the dataset named by ``source`` (see ``model.data.sources``)."""
    ref = acquire_dataset(source, settings())
    get_run_logger().info("dataset %s at %s, fingerprint %s", source, ref.root, ref.fingerprint)
    return ref
