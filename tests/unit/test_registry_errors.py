"""Which store failures the registry reports as transient (retried by the tasks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from model.errors import RegistryError, StoreUnavailable
from model.registry.store import ModelRegistry
from model.settings import Settings

pytestmark = pytest.mark.unit


def _client_error(status: int, code: str) -> ClientError:
    response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (_client_error(503, "SlowDown"), True),
        (_client_error(500, "InternalError"), True),
        (_client_error(403, "AccessDenied"), False),
        (_client_error(404, "NoSuchBucket"), False),
    ],
)
def test_outages_and_server_errors_are_transient_the_rest_is_not(
    tmp_path: Path, error: Exception, transient: bool
) -> None:
    # Building the client sends nothing; only the error classification is exercised.
    registry = ModelRegistry.from_settings(Settings(home=tmp_path))
    failure = registry._failure(error, "s3://fer/models")
    assert isinstance(failure, StoreUnavailable) is transient
    assert isinstance(failure, RegistryError)
    assert "fer services up" in str(failure)
