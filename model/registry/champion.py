"""Scoring the current champion on the challenger's test data, for the gate."""

from __future__ import annotations

import logging
from pathlib import Path

from model.contract import DatasetRef
from model.errors import RegistryError
from model.evaluation.gate import ChampionScore
from model.registry.store import ModelRegistry
from model.settings import Settings

logger = logging.getLogger(__name__)


def score_champion(
    registry: ModelRegistry, ref: DatasetRef, home: Path, work_dir: Path
) -> ChampionScore | None:
    """The current champion's test metrics on ``ref``'s test split.

    The champion's manifest is used when it was measured on the same dataset fingerprint;
    otherwise its model is downloaded (sha256-verified) and evaluated on ``ref`` now.

    Args:
        registry: the model store.
        ref: the challenger's dataset.
        home: platform home (decoded-array cache).
        work_dir: where the champion's model and reports are put when it is re-scored.

    Returns:
        Its score, or None when there is no champion yet.
    """
    from model.evaluation.metrics import evaluate_model

    pointer = registry.champion()
    if pointer is None:
        return None
    manifest = registry.read_manifest(pointer.version)
    recorded = manifest.get("metrics", {})
    if recorded.get("dataset_fingerprint") == ref.fingerprint:
        return ChampionScore(
            version=pointer.version,
            accuracy=recorded["accuracy"],
            macro_f1=recorded["macro_f1"],
            rescored=False,
        )
    logger.info(
        "champion %s was measured on other data; re-scoring it on %s", pointer.version,
        ref.fingerprint[:12],
    )  # fmt: skip
    model_path = registry.download_served(pointer.version, work_dir / "models")
    out_dir = work_dir / f"champion-{pointer.version}"
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_model(model_path, ref, home, out_dir)
    return ChampionScore(
        version=pointer.version, accuracy=metrics.accuracy, macro_f1=metrics.macro_f1,
        rescored=True,
    )  # fmt: skip


def local_model_file(spec: str, settings: Settings) -> Path:
    """A local ``.keras`` file for ``champion``, a version id in the store, or a path.

    Stored versions are downloaded (sha256-verified) with their TFLite export beside the model,
    under the platform home; a path is used as it is, without the store.

    Args:
        spec: ``champion``, a version id, or a path to a ``.keras`` file.
        settings: the store to read and the platform home.

    Raises:
        RegistryError: there is no champion yet, or the version is not in the store.
    """
    path = Path(spec)
    if path.is_file():
        return path
    registry = ModelRegistry.from_settings(settings)
    if spec == "champion":
        pointer = registry.champion()
        if pointer is None:
            raise RegistryError("no champion has been promoted yet; run `fer retrain` first")
        version, sha256 = pointer.version, pointer.sha256
    else:
        version, sha256 = spec, None
    return registry.download_served(version, settings.home_dir / "models", sha256)
