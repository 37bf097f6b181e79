"""Lineage: the manifest of every version (metrics, data, code) and a warm start's parent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.contract import CLASSES, EXPORT_FILE, TFLITE_FILE, DatasetRef
from model.errors import FerError
from model.evaluation.gate import Decision
from model.evaluation.metrics import Metrics
from model.registry.card import MODEL_CARD_FILE, model_card
from model.training.config import TrainConfig, TrainResult
from model.training.network import NetworkConfig
from model.training.warmstart import Parent, network_difference
from model.version import code_version

if TYPE_CHECKING:
    from model.registry.store import ModelRegistry


def cleaning_summary(trained: TrainResult, reports_uri: str) -> dict[str, Any] | None:
    """What cleaning removed before training, for the manifest and model card.

    Args:
        trained: the training run (its ``cleaning.json``).
        reports_uri: where the run's reports are (the full list of removed paths).

    Returns:
        Counts and statistics, or None when the run recorded no cleaning.
    """
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


def _export_summary(trained: TrainResult) -> dict[str, Any] | None:
    if trained.tflite_path is None:
        return None
    return json.loads((trained.tflite_path.parent / EXPORT_FILE).read_text())


def make_manifest(
    metrics: Metrics,
    ref: DatasetRef,
    trained: TrainResult,
    train_config: TrainConfig,
    decision: Decision,
    reports_uri: str,
) -> dict[str, Any]:
    """Assemble the version manifest (the registry adds the version, time and file hashes).

    Args:
        metrics: test metrics.
        ref: the dataset trained and evaluated on.
        trained: the training run.
        train_config: hyperparameters used.
        decision: the gate's verdict (each criterion with its value; the champion it was
            compared with).
        reports_uri: where the run's reports were uploaded.

    Returns:
        A JSON-serialisable dict.
    """
    return {
        "classes": list(CLASSES),
        "metrics": metrics.model_dump(),
        "dataset": {"fingerprint": ref.fingerprint, "source": ref.source},
        "train_config": train_config.model_dump(mode="json"),
        "gate": decision.model_dump(mode="json"),
        "training": {
            "epochs_run": trained.epochs_run,
            "precision": trained.precision,
            "backend": trained.backend,
            "hardware": trained.hardware,
            "best_val_accuracy": trained.best_val_accuracy,
            "temperature": trained.temperature,
            "warm_start": trained.warm_start.to_json() if trained.warm_start else None,
            "history": json.loads(trained.history_path.read_text()),
        },
        # The version whose weights this run started from: manifests chain to a fresh start.
        "parent": trained.warm_start.parent if trained.warm_start else None,
        "cleaning": cleaning_summary(trained, reports_uri),
        "export": _export_summary(trained),
        "reports": reports_uri,
        "code_version": code_version(),
    }


def publish_run(
    registry: ModelRegistry,
    trained: TrainResult,
    metrics: Metrics,
    ref: DatasetRef,
    train_config: TrainConfig,
    decision: Decision,
    origin: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Upload a run's reports, then its model as a new version with manifest and model card.

    Args:
        registry: the model store.
        trained: the training run (its folder holds the reports).
        metrics: test metrics.
        ref: the dataset.
        train_config: hyperparameters used.
        decision: the gate's verdict.
        origin: for an imported model, where it came from (``source`` in words, file,
            sha256); recorded as ``imported`` in the manifest.

    Returns:
        ``(version, reports URI)``.
    """
    registry.ensure_bucket()
    reports = registry.upload_folder(
        trained.run_dir,
        f"reports/{trained.run_dir.name}",
        exclude=(trained.model_path.name, TFLITE_FILE),
    )
    manifest = make_manifest(metrics, ref, trained, train_config, decision, reports)
    if origin is not None:
        manifest["training"]["source"] = origin["source"]
        manifest["imported"] = origin
    card = trained.run_dir / MODEL_CARD_FILE
    card.write_text(model_card(manifest))
    extra = [card] + ([trained.tflite_path] if trained.tflite_path else [])
    return registry.publish_version(trained.model_path, manifest, extra_files=extra), reports


def find_parent(
    registry: ModelRegistry, network: NetworkConfig, cache_dir: Path
) -> tuple[Parent | None, str]:
    """The champion to warm-start from, or None and why not.

    Args:
        registry: the model store.
        network: this run's network shape.
        cache_dir: where the champion's model file is downloaded (sha256-verified).

    Returns:
        ``(parent, reason)``: the parent and ``""``, or None and a reason in words.
    """
    try:
        pointer = registry.champion()
        if pointer is None:
            return None, "there is no champion yet"
        recorded = registry.read_manifest(pointer.version).get("train_config", {})
        difference = network_difference(network, recorded.get("network") or {})
        if difference:
            return None, f"champion {pointer.version} has another network ({difference})"
        path = registry.download_model(pointer.version, cache_dir, pointer.sha256)
    except FerError as error:
        return None, f"the champion could not be fetched ({error})"
    return Parent(pointer.version, path), ""
