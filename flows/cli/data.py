"""`fer data info|push|validate`: inspect a dataset, mirror it into the store, check its quality."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.common import QualityConfigFile, SourceArgument, clear_errors
from model.settings import get_settings

if TYPE_CHECKING:
    from validation.report import QualityReport

app = typer.Typer(help="Inspect datasets and mirror them into the S3 store.", no_args_is_help=True)


@app.command("info")
@clear_errors
def data_info(source: SourceArgument) -> None:
    """Acquire a dataset and print its image counts per split and class and its fingerprint."""
    from collections import Counter

    from model.data.dataset import read_manifest
    from model.data.sources import acquire_dataset

    ref = acquire_dataset(source, get_settings())
    records = read_manifest(ref.manifest_path)
    counts = Counter((r.split, r.label) for r in records)
    labels = sorted({label for _, label in counts})
    typer.echo(f"{'class':<10}{'train':>8}{'test':>8}")
    for label in labels:
        typer.echo(f"{label:<10}{counts[('train', label)]:>8}{counts[('test', label)]:>8}")
    totals = [sum(n for (split, _), n in counts.items() if split == s) for s in ("train", "test")]
    typer.echo(f"{'total':<10}{totals[0]:>8}{totals[1]:>8}")
    typer.echo(f"root: {ref.root}\nfingerprint: {ref.fingerprint}")


@app.command("push")
@clear_errors
def data_push(
    source: SourceArgument,
    destination: Annotated[
        str,
        typer.Argument(help="Where to copy it: s3://<bucket>/<prefix> on the configured store."),
    ],
) -> None:
    """Copy a dataset into the S3 store, so retraining can be scheduled from the team's copy."""
    from urllib.parse import urlparse

    from model.data.sources import acquire_dataset, push_dataset
    from model.errors import DatasetError
    from model.s3 import make_s3_client

    target = urlparse(destination)
    if target.scheme != "s3" or not target.netloc:
        raise DatasetError(f"destination {destination!r} is not s3://<bucket>/<prefix>")
    settings = get_settings()
    ref = acquire_dataset(source, settings)
    uploaded = push_dataset(ref.root, target.netloc, target.path, make_s3_client(settings))
    uri = f"s3://{target.netloc}/{target.path.strip('/')}"
    typer.echo(
        f"pushed {uploaded} files to {uri} (fingerprint {ref.fingerprint}); "
        f"use FER_DATASET={uri}/ to train from it"
    )


def _print_class_table(report: QualityReport) -> None:
    typer.echo(f"{'class':<10}{'train':>8}{'test':>8}{'train %':>9}{'test %':>8}")
    for row in report.classes:
        counts = [("-" if row[k] is None else f"{row[k]:,}") for k in ("train", "test")]
        shares = [
            ("-" if row[k] is None else f"{row[k]:.1%}") for k in ("train share", "test share")
        ]
        typer.echo(f"{row['class']:<10}{counts[0]:>8}{counts[1]:>8}{shares[0]:>9}{shares[1]:>8}")


def _print_quality(report: QualityReport) -> None:
    _print_class_table(report)
    summary = report.summary
    typer.echo(
        f"{'total':<10}{summary['train_images']:>8,}{summary['test_images']:>8,}\n"
        f"imbalance ratio {summary['imbalance_ratio'] or '-'}; duplicates: "
        f"{summary['duplicate_groups']:,} groups ({summary['extra_copies']:,} extra copies); "
        f"leaked test images {summary['leaked_test_images']:,}; "
        f"near-blank {summary['near_blank_images']:,}"
    )
    passed = sum(o.success for o in report.outcomes)
    typer.echo(f"{passed} of {len(report.outcomes)} checks passed")
    for outcome in report.critical_failures + report.warnings:
        color = typer.colors.RED if outcome.severity == "critical" else typer.colors.YELLOW
        typer.secho(f"{outcome.severity.upper():<8} {outcome.message}", fg=color)


@app.command("validate")
@clear_errors
def data_validate(source: SourceArgument, quality_config: QualityConfigFile = None) -> None:
    """Run the data-quality checks on a dataset; exit 1 if a critical check fails.

    Prints the images per class, every failed check and where the HTML report is; when the
    checks pass, what the clean step would keep of train.
    """
    from datetime import UTC, datetime

    from model.data.cleaning import CleaningConfig, plan_cleaning
    from model.data.sources import acquire_dataset
    from validation.config import read_quality_config
    from validation.run import validate_ref

    config = read_quality_config(quality_config)
    settings = get_settings()
    ref = acquire_dataset(source, settings)
    run_name = f"validate-{ref.fingerprint[:12]}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    report = validate_ref(ref, settings.home_dir, run_name, config)
    _print_quality(report)
    typer.echo(f"report: {report.index}")
    if not report.success:
        names = ", ".join(o.name for o in report.critical_failures)
        typer.secho(f"FAILED critical check(s): {names}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo("data quality passed")
    plan = plan_cleaning(ref, settings.home_dir, CleaningConfig())
    typer.echo(
        f"cleaning keeps {plan.train_after:,} of {plan.train_before:,} training images "
        f"(removed {plan.removed_counts})"
    )
