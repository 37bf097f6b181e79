"""The manifest that travels with every model version: metrics, data and code lineage."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from model.dataset import CLASSES, DatasetRef
from model.evaluate import Metrics
from model.gate import GateConfig
from model.train import TrainConfig, TrainResult

_REPO_ROOT = Path(__file__).resolve().parent.parent


def code_version() -> str:
    """The package version plus the git commit when run from a checkout.

    Returns:
        e.g. ``0.1.0+g1a2b3c4d`` (``-dirty`` appended for uncommitted changes).
    """
    try:
        version = metadata.version("fer-platform")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=10"],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{described}"


def _cleaning_summary(trained: TrainResult, reports_uri: str) -> dict[str, Any] | None:
    if trained.cleaning_path is None:
        return None
    report = json.loads(trained.cleaning_path.read_text())
    return {
        "stats": report["stats"],
        "train_before": report["train_before"],
        "train_after": report["train_after"],
        "removed_counts": {reason: len(paths) for reason, paths in report["removed"].items()},
        "removed_paths": f"{reports_uri}/{trained.cleaning_path.name}",
    }


def make_manifest(
    metrics: Metrics,
    ref: DatasetRef,
    trained: TrainResult,
    train_config: TrainConfig,
    gate_config: GateConfig,
    reports_uri: str,
) -> dict[str, Any]:
    """Assemble the version manifest (the registry adds the version, time and file hashes).

    Args:
        metrics: test metrics.
        ref: the dataset trained and evaluated on.
        trained: the training run.
        train_config: hyperparameters used.
        gate_config: criteria the model passed.
        reports_uri: where the run's reports were uploaded.

    Returns:
        A JSON-serialisable dict.
    """
    return {
        "classes": list(CLASSES),
        "metrics": metrics.model_dump(),
        "dataset": {"fingerprint": ref.fingerprint, "source": ref.source},
        "train_config": train_config.model_dump(mode="json"),
        "gate_config": gate_config.model_dump(mode="json"),
        "training": {
            "epochs_run": trained.epochs_run,
            "best_val_accuracy": trained.best_val_accuracy,
            "history": json.loads(trained.history_path.read_text()),
        },
        "cleaning": _cleaning_summary(trained, reports_uri),
        "reports": reports_uri,
        "code_version": code_version(),
    }
