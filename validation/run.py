"""Validate an indexed dataset end to end: profile, GX suites, report folder."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from model.contract import DatasetRef
from model.data.cleaning import pixel_records
from model.data.dataset import read_manifest
from model.errors import DataQualityError
from validation.config import QualityConfig
from validation.profile import profile_dataset
from validation.report import QualityReport, class_rows, plain_summary, write_report
from validation.suite import run_suites

logger = logging.getLogger(__name__)


def reports_dir(home: Path) -> Path:
    """Where report folders are written, one ``<run name>/`` each."""
    return home / "reports"


def validate_ref(
    ref: DatasetRef,
    home: Path,
    run_name: str,
    config: QualityConfig | None = None,
) -> QualityReport:
    """Profile a dataset, run the GX suites and write the report folder.

    The data are checked as they came; the clean step that follows decides what training
    leaves out.

    Args:
        ref: the indexed dataset.
        home: platform home (array cache, GX context under ``gx/``, reports).
        run_name: name of this validation run (Data Docs, report folder).
        config: bounds; defaults to :class:`QualityConfig`'s.

    Returns:
        The report (successful or not); ``report_dir`` is ``<home>/reports/<run_name>``.
    """
    config = config or QualityConfig()
    records = read_manifest(ref.manifest_path)
    pixels = pixel_records(ref, home)
    profile = profile_dataset(ref.root, records, pixels, config.near_blank_std)
    suites = run_suites(profile, config, home / "gx", run_name)
    report = QualityReport(
        run_name=run_name,
        fingerprint=ref.fingerprint,
        root=str(ref.root),
        outcomes=suites.outcomes,
        classes=class_rows(profile.classes),
        summary=plain_summary(profile.summary),
    )
    out = reports_dir(home) / _safe_name(run_name)
    write_report(report, out, suites.docs_index, suites.pages)
    report = replace(report, report_dir=out)
    _log(report)
    return report


def _safe_name(run_name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in run_name) or "run"


def _log(report: QualityReport) -> None:
    for outcome in report.warnings:
        logger.warning("data-quality warning %s", outcome.message)
    for outcome in report.critical_failures:
        logger.error("data-quality failure %s", outcome.message)
    logger.info(
        "data quality of %s: %s (%d checks, %d critical failures, %d warnings); report %s",
        report.fingerprint[:12],
        "passed" if report.success else "FAILED",
        len(report.outcomes),
        len(report.critical_failures),
        len(report.warnings),
        report.index,
    )


def raise_on_failure(report: QualityReport, location: str | None = None) -> None:
    """Raise one error naming every failed critical check.

    Args:
        report: the validation report.
        location: where the report can be read (store URI); defaults to the local folder.

    Raises:
        DataQualityError: if any critical check failed; the message starts with the names of
            the failed checks, then each one's details.
    """
    failed = report.critical_failures
    if not failed:
        return
    names = ", ".join(o.name for o in failed)
    where = location or (str(report.index) if report.index else "")
    raise DataQualityError(
        f"dataset {report.root} failed critical data-quality check(s) {names}: "
        + "; ".join(o.message for o in failed)
        + (f"; report: {where}" if where else "")
    )
