"""Where Prefect keeps task results and cache records: the platform's own S3 store.

A local folder would only serve the worker that wrote it: a Kubernetes flow-run pod starts
with an empty ``emptyDir``, and a second worker has another home. In the store, a dataset
validated by one run is found validated by the next, wherever it runs.
"""

from __future__ import annotations

from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters

from model.settings import Settings

#: The block's name, the slug the retrain flow names it by, and the folder in the bucket.
RESULTS_BLOCK = "fer-results"
RESULTS_STORAGE = f"s3-bucket/{RESULTS_BLOCK}"
RESULTS_FOLDER = "prefect-results"


def ensure_result_storage(settings: Settings) -> None:
    """Save (or update) the ``s3-bucket/fer-results`` block for the store.

    The retrain flow names it as its result storage, so every run, wherever it runs, loads
    it from the server. The Prefect API must be set (``temporary_settings``).
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
