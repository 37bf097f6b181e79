"""Task: the clean step between validation and training, with its plan in the Prefect UI."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from model.contract import DatasetRef
from model.data.cleaning import Cleaned, CleaningConfig, clean_dataset
from tasks.common import settings


@task(name="clean_dataset", timeout_seconds=1800)
def clean_dataset_task(ref: DatasetRef, config: CleaningConfig) -> Cleaned:
    """Decide which training images to keep; training and lineage take the plan from here.

    Publishes the ``cleaning`` artifact: images kept, removed per reason, where every removed
    path is listed.
    """
    cleaned = clean_dataset(ref, settings().home_dir, config)
    removed = ", ".join(f"{reason} {n:,}" for reason, n in cleaned.removed_counts.items())
    create_markdown_artifact(
        key="cleaning",
        markdown=(
            f"Kept **{cleaned.train_after:,}** of {cleaned.train_before:,} training images of "
            f"dataset `{ref.fingerprint[:12]}`; removed: {removed}.\n\n"
            f"Cleaning plan (every removed path): `{cleaned.report_path}`"
        ),
        description="What the clean step removed from train, and why",
    )
    get_run_logger().info(
        "cleaning kept %d of %d training images; plan %s",
        cleaned.train_after,
        cleaned.train_before,
        cleaned.report_path,
    )
    return cleaned
