"""Warm start through the real flow and store; training progress on the real Prefect server."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from flows.retrain import run_retrain
from model.evaluation.gate import GateConfig
from model.registry.lineage import find_parent
from model.registry.store import ModelRegistry
from model.settings import Settings
from model.training.network import NetworkConfig
from tests.integration.conftest import QUICK, SUBSET_QUALITY, run_that_published

pytestmark = pytest.mark.integration

#: The gate does not matter here: each run must publish, whatever it scores.
ANY = GateConfig(min_accuracy=0.0, min_macro_f1=0.0, min_class_recall=0.0, max_regression=1.0)


def test_a_nightly_run_starts_from_the_champion_and_records_it(
    services: Settings,
    registry: ModelRegistry,
    fer_subset: Path,
    champion_version: str,
    tmp_path: Path,
) -> None:
    assert find_parent(registry, QUICK.network, tmp_path) == (None, "there is no champion yet")
    # The session's champion (QUICK's network), published and promoted in this bucket.
    default = ModelRegistry.from_settings(services)
    recorded = default.read_manifest(champion_version)
    digest = recorded["files"]["model.keras"]["sha256"]
    model = default.download_model(champion_version, tmp_path / "download", digest)
    first = registry.publish_version(model, recorded)
    registry.promote(first)

    warm = QUICK.model_copy(update={"warm_start": True})
    out = io.StringIO()
    second = run_retrain(services, str(fer_subset), warm, ANY, SUBSET_QUALITY, progress=out)
    # `fer retrain`'s display followed the run from its thread (tasks run back to back).
    assert "stage: " in out.getvalue()

    manifest = registry.read_manifest(second)
    assert manifest["parent"] == first
    assert manifest["training"]["warm_start"] == {
        "parent": first,
        "reason": f"started from champion {first}",
    }
    card = registry.client.get_object(Bucket=registry.bucket, Key=f"models/{second}/model_card.md")[
        "Body"
    ].read()
    assert f"Warm-started from version `{first}`" in card.decode()
    assert registry.champion().version == second  # the gate still decided; it passed

    # The parent the next run would take: the champion, fetched and verified.
    parent, reason = find_parent(registry, QUICK.network, tmp_path / "cache")
    assert parent is not None and parent.version == second and reason == ""
    assert parent.model_path.read_bytes()[:2] == b"PK"  # a .keras zip

    other = NetworkConfig(filters=(8, 16), dense_units=32)
    parent, reason = find_parent(registry, other, tmp_path / "cache")
    assert parent is None
    assert reason.startswith(f"champion {second} has another network (filters [8, 16] here")

    # A champion whose stored model no longer matches its hash: a fresh start, not a crash.
    registry.client.put_object(
        Bucket=registry.bucket, Key=f"models/{second}/model.keras", Body=b"tampered"
    )
    parent, reason = find_parent(registry, QUICK.network, tmp_path / "fresh-cache")
    assert parent is None and reason.startswith("the champion could not be fetched")


def test_training_progress_reaches_the_ui_and_the_terminal(
    services: Settings, champion_version: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.progress import ProgressDisplay, follow_flow_run

    run = run_that_published(services, champion_version)
    assert any(tag.startswith("fer-cli-") for tag in run.tags)  # how `fer retrain` finds it
    with temporary_settings({PREFECT_API_URL: services.prefect_url}):
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            )
        (progress,) = [a for a in artifacts if a.key == "training-progress"]
        # Created at 0 when training started, moved each epoch, 100 at the end.
        assert progress.type == "progress" and float(progress.data) == 100.0
        assert progress.description.startswith("done after 1 epochs, best val_accuracy 0.")
        epoch_lines = [log.message for log in logs if log.message.startswith("epoch 1/1: ")]
        assert len(epoch_lines) == 1 and "val_accuracy" in epoch_lines[0]
        assert epoch_lines[0].endswith("0:00 left")

        out = io.StringIO()
        finished = follow_flow_run(run.id, ProgressDisplay(out))
    assert finished.state.is_completed()
    assert out.getvalue() == f"training: {progress.description}\n"
