"""The model card: a markdown page generated from a version's manifest."""

from __future__ import annotations

from typing import Any

MODEL_CARD_FILE = "model_card.md"


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


_CARD = """# Model card: FER emotion classifier

## Intended use
Classifies the facial expression in a 48x48 grayscale face crop into one of seven classes
({classes}), for research, demos and aggregate analysis (how a room or a
video reacts overall). Outputs are probabilities of a *shown* expression, not of what a person
feels.

## Not for
Decisions about individuals: hiring, performance or behaviour assessment, education,
policing, border control, health or insurance. The EU AI Act (Regulation 2024/1689, art. 5)
prohibits inferring emotions of people in workplaces and education institutions (except for
medical or safety reasons) and treats most other emotion recognition as high-risk; other
jurisdictions restrict it too. Check the law where you deploy.

## Data
FER2013 layout, dataset fingerprint `{fingerprint}` from
`{source}`. FER2013 is web-scraped: its labels are noisy (human
agreement is about 65 %), its faces skew towards young, light-skinned adults and posed or
acted expressions, and it has few disgust images (~1.5 %). Before training, cleaning removed
from train every image whose pixels occur in test, duplicates, label-conflicting copies and
near-blank frames: {train_before} -> {train_after}
training images ({removed_counts}).

## Metrics (test split, {n_test} images)
Accuracy {accuracy:.4f}, macro F1 {macro_f1:.4f}; best validation
accuracy {best_val_accuracy:.4f} after {epochs_run} epochs
({precision} compute{trained_on}).{started_from}

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
- Trained with code version `{code_version}` and the train config
  in `manifest.json`.
"""


def model_card(manifest: dict[str, Any]) -> str:
    """A model card (markdown) generated from a version's manifest.

    Args:
        manifest: the manifest from :func:`model.registry.lineage.make_manifest`.

    Returns:
        The card: intended use, data and its known problems, metrics per class, calibration,
        limitations, and where emotion recognition is restricted.
    """
    metrics, training = manifest["metrics"], manifest["training"]
    cleaning = manifest.get("cleaning") or {}
    gate = manifest.get("gate") or {}
    return _CARD.format(
        classes=", ".join(manifest["classes"]),
        fingerprint=manifest["dataset"]["fingerprint"][:12],
        source=manifest["dataset"]["source"],
        train_before=cleaning.get("train_before", "?"),
        train_after=cleaning.get("train_after", "?"),
        removed_counts=cleaning.get("removed_counts", {}),
        n_test=metrics["n_test"],
        accuracy=metrics["accuracy"],
        macro_f1=metrics["macro_f1"],
        best_val_accuracy=training["best_val_accuracy"],
        epochs_run=training["epochs_run"],
        precision=training["precision"],
        trained_on=_trained_on(training),
        started_from=_started_from(manifest),
        rows=_metric_rows(metrics),
        calibration=_calibration(metrics, training),
        serving=_serving(manifest),
        checks="\n".join(f"- {check}" for check in gate.get("checks", [])) or "- not recorded",
        code_version=manifest.get("code_version", "unknown"),
    )


def _metric_rows(metrics: dict[str, Any]) -> str:
    """The per-class table's rows."""
    return "\n".join(
        f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        for name, m in metrics["per_class"].items()
    )


def _calibration(metrics: dict[str, Any], training: dict[str, Any]) -> str:
    """The temperature and the expected calibration error before and after it."""
    ece = metrics.get("ece")
    ece_before = metrics.get("ece_uncalibrated")
    return (
        f"Softmax temperature {training.get('temperature', 1.0):.3f}, fitted on the validation "
        f"split. Expected calibration error on test: "
        f"{'n/a' if ece_before is None else f'{ece_before:.4f}'} before, "
        f"{'n/a' if ece is None else f'{ece:.4f}'} after (the served probabilities)."
    )


#: How a face is scored, by the number of views averaged (test-time augmentation).
_VIEWS = {
    1: "",
    2: " Each face is scored as the average of it and its mirror image.",
    5: " Each face is scored as the average of its centre and four corner crops.",
    10: " Each face is scored as the average of ten crops (centre, four corners, and "
    "their mirror images).",
}


def _serving(manifest: dict[str, Any]) -> str:
    """What serves (the export or the Keras model) and how a face is scored."""
    export = manifest.get("export")
    train_config = manifest.get("train_config", {})
    views = 2 if train_config.get("test_time_flip") else 1
    views *= 5 if train_config.get("test_time_shifts") else 1
    served = (
        f"Served from `{export['file']}` (TFLite through LiteRT, quantization: "
        f"{export.get('quantization', 'none (float32)')}); its probabilities are within "
        f"{export['max_abs_difference']:.1e} of the Keras model's over "
        f"{export['checked_images']} checked images. The metrics above are the export's."
        if export
        else "Served from `model.keras` (no TFLite export for this version)."
    )
    return served + _VIEWS[views]
