"""Task: run the data-quality suites, publish Data Docs, fail the run on critical errors."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from model.dataset import DatasetRef
from model.registry import ModelRegistry
from tasks.common import settings
from validation.run import raise_on_failure, validate_ref
from validation.suite import QualityReport


@task(name="validate_dataset", timeout_seconds=1800)
def validate_dataset_task(ref: DatasetRef) -> QualityReport:
    """Validate the dataset; the Data Docs link becomes a Prefect artifact."""
    current = settings()
    run_name = flow_run.get_name() or ref.fingerprint[:12]
    report = validate_ref(ref, current.home_dir / "gx", run_name)
    lines = [
        f"**{'passed' if report.success else 'FAILED'}**: {report.evaluated} expectations "
        f"on dataset `{ref.fingerprint[:12]}` ({ref.root})",
        *(f"- {failure}" for failure in report.failures),
    ]
    if report.docs_index is not None:
        registry = ModelRegistry.from_settings(current)
        uri = registry.upload_folder(report.docs_index.parent, f"reports/{run_name}/data_docs")
        lines.append(f"\nData Docs: `{report.docs_index}` (local), `{uri}/index.html` (store)")
    create_markdown_artifact(
        key="data-quality",
        markdown="\n".join(lines),
        description="Great Expectations data-quality report",
    )
    get_run_logger().info("data quality %s", "passed" if report.success else "failed")
    raise_on_failure(report, ref)
    return report
