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
