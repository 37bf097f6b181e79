"""What every task shares: settings access and the retry policy."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from model.errors import FerError, StoreUnavailable
from model.settings import Settings, get_settings


def settings() -> Settings:
    """Settings as the task's process sees them (environment and ``.env``)."""
    return get_settings()


def retry_unless_platform_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures only: the platform's own errors are deterministic.

    The exception is :class:`StoreUnavailable`: an S3 outage that outlasted boto3's own
    retries, which a later attempt may get past.

    Args:
        task: the Prefect task.
        task_run: the failed run.
        state: its final state.

    Returns:
        True to retry.
    """
    try:
        state.result()
    except StoreUnavailable:
        return True
    except FerError:
        return False
    except Exception:
        return True
    return False


def retrying(retries: int, first_delay_seconds: float) -> dict[str, Any]:
    """The retry policy of the tasks that reach a store or a source, as ``@task`` arguments.

    Transient failures (see :func:`retry_unless_platform_error`) are retried after
    ``first_delay_seconds``, then twice and four times as long, each +-50 %, so that workers
    retrying the same outage do not arrive together; the platform's own errors fail at once.

    Args:
        retries: how many times to retry.
        first_delay_seconds: the wait before the first retry.
    """
    return {
        "retries": retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=first_delay_seconds),
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": retry_unless_platform_error,
    }
