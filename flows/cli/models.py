"""`fer models ...` (the versions in the store) and `fer evaluate` (score any model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.common import Dataset, clear_errors, with_gate_options
from model.evaluation.gate import GateConfig
from model.settings import get_settings

if TYPE_CHECKING:
    from model.registry.store import ModelRegistry

app = typer.Typer(
    help="Model versions in the store: list, show, promote, rollback, verify, prune, import."
)

VersionArgument = Annotated[str, typer.Argument(help="Version id (see `fer models list`).")]


def _registry() -> ModelRegistry:
    from model.registry.store import ModelRegistry

    return ModelRegistry.from_settings(get_settings())


@app.callback(invoke_without_command=True)
def _models_default(context: typer.Context) -> None:
    """Without a subcommand: the same as `fer models list`."""
    if context.invoked_subcommand is None:
        models_list()


@app.command("list")
@clear_errors
def models_list() -> None:
    """List the versions, newest last, with their warm-start parent; * marks the champion."""
    registry = _registry()
    champion = registry.champion()
    typer.echo(f"  {'version':32} {'created (UTC)':20} {'accuracy':>8}  dataset       parent")
    for version in registry.list_versions():
        manifest = registry.read_manifest(version)
        mark = "*" if champion and champion.version == version else " "
        if champion and version == champion.previous:
            mark = "p"
        typer.echo(
            f"{mark} {version:32} {manifest.get('created_at', '?')[:19]:20} "
            f"{manifest['metrics']['accuracy']:8.4f}  "
            f"{manifest.get('dataset', {}).get('fingerprint', '?')[:12]:12}  "
            f"{manifest.get('parent') or '-'}"
        )
    if champion is None:
        typer.echo("no champion yet")
    else:
        typer.echo(f"* champion {champion.version}   p previous {champion.previous or '-'}")


@app.command("show")
@clear_errors
def models_show(version: VersionArgument) -> None:
    """Print a version's manifest as JSON (the per-epoch history is left out)."""
    manifest = _registry().read_manifest(version)
    training = {k: v for k, v in manifest.get("training", {}).items() if k != "history"}
    typer.echo(json.dumps({**manifest, "training": training}, indent=2))


@app.command("promote")
@clear_errors
def models_promote(version: VersionArgument) -> None:
    """Make a version the champion (bypasses the gate: an operator's decision)."""
    pointer = _registry().promote(version)
    typer.echo(f"champion is now {pointer.version} (previous: {pointer.previous or '-'})")


@app.command("rollback")
@clear_errors
def models_rollback() -> None:
    """Make the previous champion the champion again; repeat to go further back."""
    pointer = _registry().rollback()
    typer.echo(f"champion is now {pointer.version} (previous: {pointer.previous or '-'})")


@app.command("verify")
@clear_errors
def models_verify(version: VersionArgument) -> None:
    """Download every file of a version and check its sha256 and size; exit 1 on a mismatch."""
    results = _registry().verify_version(version)
    for name, result in results.items():
        typer.echo(f"{name}: {result}")
    if any(result != "ok" for result in results.values()):
        raise typer.Exit(1)


@app.command("prune")
@clear_errors
def models_prune(
    keep: Annotated[int, typer.Option(help="How many of the newest versions to keep.", min=0)],
    dry_run: Annotated[bool, typer.Option(help="Only list what would be deleted.")] = False,
) -> None:
    """Delete old versions (never the champion or its previous) and day-old broken uploads."""
    pruned = _registry().prune(keep, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {len(pruned.versions)} version(s)"
        + "".join(f"\n  {v}" for v in pruned.versions)
        + f"\n{verb} {len(pruned.incomplete)} incomplete upload(s) older than a day"
        + "".join(f"\n  {v}" for v in pruned.incomplete)
    )


@app.command("import")
@clear_errors
@with_gate_options
def models_import(
    path: Annotated[
        Path,
        typer.Argument(
            help="A .keras file trained elsewhere (a GPU run, pretrained/...), with the "
            "manifest.json its training run wrote beside it.",
            dir_okay=False,
        ),
    ],
    source: Annotated[
        str,
        typer.Option(help="What trained it, in words (e.g. 'device run 2026-11-30, H200')."),
    ],
    dataset: Dataset = None,
    *,
    gate: GateConfig,
) -> None:
    """Publish an externally trained model as a version; promote it if it passes the gate.

    It is loaded in safe mode, exported to TFLite (checked against Keras), scored on the
    dataset's test split and gated like a retrain. A model trained on other data (another
    dataset fingerprint), a wrong file or a failed gate publishes nothing.
    """
    from model.data.sources import acquire_dataset
    from model.registry.importing import import_model
    from model.registry.store import ModelRegistry

    settings = get_settings()
    ref = acquire_dataset(dataset or settings.dataset, settings)
    registry = ModelRegistry.from_settings(settings)
    imported = import_model(path, source, ref, settings.home_dir, registry, gate)
    metrics = imported.metrics
    typer.echo(
        f"imported {path} as version {imported.version}: test accuracy {metrics.accuracy:.4f}, "
        f"macro F1 {metrics.macro_f1:.4f} on {metrics.n_test} images ({metrics.runtime})\n"
        + "\n".join(f"  {check}" for check in imported.decision.checks)
        + f"\npromoted model version {imported.version}"
    )


@clear_errors
def evaluate(
    model: Annotated[
        str,
        typer.Option(
            help="A .keras file, a version id in the store, or `champion` (downloaded and "
            "sha256-verified)."
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="Labelled images: a folder DIR/<class>/* or DIR/test/<class>/*, or a CSV "
            "with path and label columns."
        ),
    ],
) -> None:
    """Score a model on labelled images; print accuracy, per-class metrics, ECE as JSON."""
    from model.evaluation.metrics import load_labelled_images, load_scored, score_model
    from model.registry.champion import local_model_file

    x, y = load_labelled_images(data)
    model_file = local_model_file(model, get_settings())
    metrics = score_model(*load_scored(model_file), x, y, str(data))
    typer.echo(json.dumps({"model": model, "data": str(data), **metrics.model_dump()}, indent=2))
