"""The S3 client every part of the platform uses (registry, data sources, reports).

boto3 is imported when a client is made, so importing this module stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

    from model.settings import Settings

# boto3 clients are generated at run time; there is no importable class to annotate with.
S3Client = Any


def make_s3_client(settings: Settings, timeout: float | None = None) -> S3Client:
    """Create a boto3 S3 client for the configured endpoint (path-style addressing).

    Args:
        settings: platform settings.
        timeout: for a caller that asks again soon anyway (serving's poll): seconds each
            connect and each read may take, and no retry, so a hung store is noticed within
            that. None: the patient defaults of uploads (5 s, 60 s, ``settings.s3_attempts``
            attempts).

    Returns:
        The client.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key.get_secret_value(),
        config=Config(
            s3={"addressing_style": "path"},
            # total_max_attempts counts the first request too (max_attempts counts retries).
            retries={
                "total_max_attempts": settings.s3_attempts if timeout is None else 1,
                "mode": "standard",
            },
            connect_timeout=5 if timeout is None else timeout,
            read_timeout=60 if timeout is None else timeout,
        ),
    )


def s3_error_code(error: ClientError) -> str:
    """The S3 error code of a failed call (``NoSuchKey``, ``412``, ...), or ``""``."""
    return str(error.response.get("Error", {}).get("Code", ""))
