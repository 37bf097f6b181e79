"""Tasks: validate the dataset (cached by fingerprint), then report and enforce the result."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext
from prefect.runtime import flow_run

from model.contract import DatasetRef
from model.registry.store import ModelRegistry
from model.version import code_version
from tasks import events
from tasks.common import settings
from validation.config import QualityConfig
from validation.report import QualityReport
from validation.run import raise_on_failure, validate_ref


@dataclass(frozen=True)
class ValidatedDataset:
    """A validation report and where its HTML copy lives in the store.

    Attributes:
        report: the checks' outcomes (small; paths, not data).
        report_key: the store key of the report's front page, or None without a report.
        location: ``s3://`` URI of that page, or None.
    """

    report: QualityReport
    report_key: str | None
    location: str | None


def validation_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same data, same bounds, same code and store: the same validation.

    The store is part of the key, so a result is never reused by a platform instance that
    cannot see the report it points at; the home is not, so a run on another worker (another
    home) reuses it from the store (flows/storage.py).
    """
    current = settings()
    parts = (
        parameters["ref"].fingerprint,
        parameters["config"].model_dump_json(),
        code_version(),
        current.s3_url,
        current.s3_bucket,
    )
    return "validate-dataset-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]


@task(
    name="validate_dataset",
    timeout_seconds=1800,
    cache_key_fn=validation_cache_key,
    persist_result=True,
)
def validate_dataset_task(ref: DatasetRef, config: QualityConfig) -> ValidatedDataset:
    """Run the GX suites and put the report in the store.

    Cached by dataset fingerprint (see :func:`validation_cache_key`): an unchanged dataset is
    not validated again, and a failing one fails again in ``check_data_quality`` from the cache.
    """
    current = settings()
    run_name = flow_run.get_name() or ref.fingerprint[:12]
    report = validate_ref(ref, current.home_dir, run_name, config)
    key = location = None
    if report.report_dir is not None:
        registry = ModelRegistry.from_settings(current)
        prefix = f"reports/{run_name}/data_quality"
        location = f"{registry.upload_folder(report.report_dir, prefix)}/index.html"
        key = f"{prefix}/index.html"
    return ValidatedDataset(report, key, location)


@task(name="check_data_quality", timeout_seconds=300)
def check_data_quality_task(validated: ValidatedDataset) -> QualityReport:
    """Show the verdict in the Prefect UI and fail the run on a critical failure."""
    report = validated.report
    link = None
    if validated.report_key is not None:
        link = ModelRegistry.from_settings(settings()).presigned_url(validated.report_key)
    _publish_artifacts(report, validated.location, link)
    get_run_logger().info(
        "data quality %s (validated in run %s): %d critical failures, %d warnings; report %s",
        "passed" if report.success else "FAILED",
        report.run_name,
        len(report.critical_failures),
        len(report.warnings),
        validated.location or report.index,
    )
    if report.critical_failures:
        events.data_refused(report)
    raise_on_failure(report, validated.location)
    return report


def _publish_artifacts(report: QualityReport, location: str | None, link: str | None) -> None:
    verdict = "passed" if report.success else "FAILED"
    lines = [
        f"**{verdict}**: {len(report.outcomes)} checks on dataset `{report.fingerprint[:12]}` "
        f"({report.root}); {len(report.critical_failures)} critical failures, "
        f"{len(report.warnings)} warnings; validated in run `{report.run_name}`",
        "",
        f"[Open the report]({link}) (link valid 7 days)" if link else "",
        f"Report (self-contained HTML + Data Docs): `{location}`" if location else "",
        f"Local copy: `{report.index}`" if report.index else "",
        "",
        *(f"- **{o.severity}** {o.message}" for o in report.critical_failures + report.warnings),
    ]
    create_markdown_artifact(
        key="data-quality",
        markdown="\n".join(lines),
        description="Great Expectations data-quality report: verdict and where to read it",
    )
    failed = [
        {"check": o.name, "severity": o.severity, "observed": o.observed, "details": o.message}
        for o in report.critical_failures + report.warnings
    ]
    create_table_artifact(
        key="data-quality-classes",
        table=list(report.classes),
        description="Images and shares per class and split",
    )
    create_table_artifact(
        key="data-quality-failures",
        table=failed or [{"check": "none", "severity": "", "observed": "", "details": ""}],
        description="Every failed data-quality expectation (critical and warning)",
    )
