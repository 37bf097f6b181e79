"""What every task shares: settings access and the retry policy."""

from __future__ import annotations

from typing import Any

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
