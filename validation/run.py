"""Run the data-quality suites on an indexed dataset and turn failures into one error."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from model.dataset import CLASSES, IMAGE_SIZE, SPLITS, DatasetRef, read_manifest
from model.errors import DataQualityError
from validation.suite import QualityReport, validate_dataset


def validate_ref(ref: DatasetRef, context_dir: Path, run_name: str) -> QualityReport:
    """Validate a dataset's manifest with the GX suites and build Data Docs.

    Args:
        ref: the indexed dataset.
        context_dir: root of the GX file data context.
        run_name: name of this validation run in Data Docs.

    Returns:
        The report (successful or not).
    """
    manifest = pd.DataFrame([asdict(record) for record in read_manifest(ref.manifest_path)])
    return validate_dataset(manifest, CLASSES, SPLITS, context_dir, run_name, IMAGE_SIZE)


def raise_on_failure(report: QualityReport, ref: DatasetRef) -> None:
    """Raise one error listing every failed critical expectation.

    Args:
        report: the validation report.
        ref: the dataset it is about (named in the message).

    Raises:
        DataQualityError: if any expectation failed.
    """
    if not report.success:
        docs = f"; Data Docs: {report.docs_index}" if report.docs_index else ""
        raise DataQualityError(
            f"dataset {ref.root} failed {len(report.failures)} data-quality check(s): "
            + "; ".join(report.failures)
            + docs
        )
