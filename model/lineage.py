"""The manifest that travels with every model version: metrics, data and code lineage."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.dataset import CLASSES, DatasetRef
from model.evaluate import Metrics
from model.export import EXPORT_FILE, TFLITE_FILE
from model.gate import Decision
from model.train import TrainConfig, TrainResult

if TYPE_CHECKING:
    from model.registry import ModelRegistry

_REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_CARD_FILE = "model_card.md"


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


def _trained_on(training: dict[str, Any]) -> str:
    """``", Keras jax backend on NVIDIA H200"`` where the manifest records it."""
    where = [f"Keras {training['backend']} backend"] if training.get("backend") else []
    where += [f"on {training['hardware']}"] if training.get("hardware") else []
    origin = training.get("source")
    where += [f"trained by {origin}"] if origin else []
    return ", " + " ".join(where) if where else ""


def _started_from(manifest: dict[str, Any]) -> str:
    """The card's sentence on where training started (warm start and its parent)."""
    warm = manifest["training"].get("warm_start")
    if manifest.get("parent"):
        return (
            f" Warm-started from version `{manifest['parent']}` (the champion then; its "
            "manifest names its own parent)."
        )
    if warm:
        return f" Trained from scratch: {warm['reason']}."
    return ""


def model_card(manifest: dict[str, Any]) -> str:
    """A model card (markdown) generated from a version's manifest.

    Args:
        manifest: the manifest from :func:`make_manifest`.

    Returns:
        The card: intended use, data and its known problems, metrics per class, calibration,
        limitations, and where emotion recognition is restricted.
    """
    metrics = manifest["metrics"]
    training = manifest["training"]
    cleaning = manifest.get("cleaning") or {}
    rows = "\n".join(
        f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        for name, m in metrics["per_class"].items()
    )
    ece = metrics.get("ece")
    ece_before = metrics.get("ece_uncalibrated")
    calibration = (
        f"Softmax temperature {training.get('temperature', 1.0):.3f}, fitted on the validation "
        f"split. Expected calibration error on test: "
        f"{'n/a' if ece_before is None else f'{ece_before:.4f}'} before, "
        f"{'n/a' if ece is None else f'{ece:.4f}'} after (the served probabilities)."
    )
    export = manifest.get("export")
    train_config = manifest.get("train_config", {})
    views = 2 if train_config.get("test_time_flip") else 1
    views *= 5 if train_config.get("test_time_shifts") else 1
    serving = (
        f"Served from `{export['file']}` (TFLite through LiteRT, quantization: "
        f"{export.get('quantization', 'none (float32)')}); its probabilities are within "
        f"{export['max_abs_difference']:.1e} of the Keras model's over "
        f"{export['checked_images']} checked images. The metrics above are the export's."
        if export
        else "Served from `model.keras` (no TFLite export for this version)."
    ) + (
        {
            1: "",
            2: " Each face is scored as the average of it and its mirror image.",
            5: " Each face is scored as the average of its centre and four corner crops.",
            10: " Each face is scored as the average of ten crops (centre, four corners, and "
            "their mirror images).",
        }[views]
    )
    gate = manifest.get("gate") or {}
    checks = "\n".join(f"- {check}" for check in gate.get("checks", [])) or "- not recorded"
    return f"""# Model card: FER emotion classifier

## Intended use
Classifies the facial expression in a 48x48 grayscale face crop into one of seven classes
({", ".join(manifest["classes"])}), for research, demos and aggregate analysis (how a room or a
video reacts overall). Outputs are probabilities of a *shown* expression, not of what a person
feels.

## Not for
Decisions about individuals: hiring, performance or behaviour assessment, education,
policing, border control, health or insurance. The EU AI Act (Regulation 2024/1689, art. 5)
prohibits inferring emotions of people in workplaces and education institutions (except for
medical or safety reasons) and treats most other emotion recognition as high-risk; other
jurisdictions restrict it too. Check the law where you deploy.

## Data
FER2013 layout, dataset fingerprint `{manifest["dataset"]["fingerprint"][:12]}` from
`{manifest["dataset"]["source"]}`. FER2013 is web-scraped: its labels are noisy (human
agreement is about 65 %), its faces skew towards young, light-skinned adults and posed or
acted expressions, and it has few disgust images (~1.5 %). Before training, cleaning removed
from train every image whose pixels occur in test, duplicates, label-conflicting copies and
near-blank frames: {cleaning.get("train_before", "?")} -> {cleaning.get("train_after", "?")}
training images ({cleaning.get("removed_counts", {})}).

## Metrics (test split, {metrics["n_test"]} images)
Accuracy {metrics["accuracy"]:.4f}, macro F1 {metrics["macro_f1"]:.4f}; best validation
accuracy {training["best_val_accuracy"]:.4f} after {training["epochs_run"]} epochs
({training["precision"]} compute{_trained_on(training)}).{_started_from(manifest)}

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

{calibration}

{serving}

## Promotion gate
{checks}

## Limitations
- Expects one roughly frontal, centred face per crop; profile views, occlusion, low light and
  children are under-represented in training and score worse.
- Disgust and fear are the weakest classes; fear is often confused with sad and surprise.
- Accuracy is measured on FER2013's own test split; other populations and cameras differ.
- Trained with code version `{manifest.get("code_version", "unknown")}` and the train config
  in `manifest.json`.
"""
