"""Task: run the data-quality suites, publish the report, fail the run on a critical failure."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from model.cleaning import CleaningConfig
from model.dataset import DatasetRef
from model.registry import ModelRegistry
from tasks.common import settings
from validation.config import QualityConfig
from validation.report import QualityReport
from validation.run import raise_on_failure, validate_ref


@task(name="validate_dataset", timeout_seconds=1800)
def validate_dataset_task(
    ref: DatasetRef, config: QualityConfig, cleaning: CleaningConfig
) -> QualityReport:
    """Validate the dataset; the report goes to the store and into Prefect artifacts."""
    current = settings()
    run_name = flow_run.get_name() or ref.fingerprint[:12]
    report = validate_ref(ref, current.home_dir, run_name, config, cleaning)
    location = link = None
    if report.report_dir is not None:
        registry = ModelRegistry.from_settings(current)
        prefix = f"reports/{run_name}/data_quality"
        location = f"{registry.upload_folder(report.report_dir, prefix)}/index.html"
        link = registry.presigned_url(f"{prefix}/index.html")
    _publish_artifacts(report, location, link)
    get_run_logger().info(
        "data quality %s: %d critical failures, %d warnings; report %s",
        "passed" if report.success else "FAILED",
        len(report.critical_failures),
        len(report.warnings),
        location or report.index,
    )
    raise_on_failure(report, location)
    return report


def _publish_artifacts(report: QualityReport, location: str | None, link: str | None) -> None:
    verdict = "passed" if report.success else "FAILED"
    lines = [
        f"**{verdict}**: {len(report.outcomes)} checks on dataset `{report.fingerprint[:12]}` "
        f"({report.root}); {len(report.critical_failures)} critical failures, "
        f"{len(report.warnings)} warnings",
        "",
        f"[Open the report]({link}) (link valid 7 days)" if link else "",
        f"Report (self-contained HTML + Data Docs): `{location}`" if location else "",
        f"Local copy: `{report.index}`" if report.index else "",
        f"Cleaning plan (every removed path): `{report.cleaning_path}`",
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
