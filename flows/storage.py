"""Where Prefect keeps task results and cache records: the platform's own S3 store.

A local folder would only serve the worker that wrote it: a Kubernetes flow-run pod starts
with an empty ``emptyDir``, and a second worker has another home. In the store, a dataset
validated by one run is found validated by the next, wherever it runs.
"""

from __future__ import annotations

from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters

from model.settings import Settings

#: The block's name, and the folder of the bucket results go to.
RESULTS_BLOCK = "fer-results"
RESULTS_FOLDER = "prefect-results"


def ensure_result_storage(settings: Settings) -> str:
    """Save (or update) the ``s3-bucket/fer-results`` block for the store; return its slug.

    The Prefect API must be set (``temporary_settings``). Runs find it through the
    ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` setting (see :func:`result_settings`).
    """
    credentials = AwsCredentials(
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
        aws_client_parameters=AwsClientParameters(endpoint_url=settings.s3_url),
    )
    block = S3Bucket(
        bucket_name=settings.s3_bucket, bucket_folder=RESULTS_FOLDER, credentials=credentials
    )
    block.save(RESULTS_BLOCK, overwrite=True)
    return f"s3-bucket/{RESULTS_BLOCK}"


def result_settings(slug: str) -> dict[str, str]:
    """The environment a flow run needs to keep its results in the block ``slug``."""
    return {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": slug}
