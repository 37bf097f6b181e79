"""The retrain flow on a real Prefect server and SeaweedFS, on a real FER2013 subset."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from flows.cli import run_retrain
from model.dataset import compute_fingerprint, scan_dataset
from model.errors import DataQualityError, GateFailed
from model.gate import GateConfig
from model.registry import ModelRegistry
from model.settings import Settings
from tests.integration.conftest import QUICK

pytestmark = pytest.mark.integration


def _latest_run_state(settings: Settings) -> tuple[str, str | None]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read() -> tuple[str, str | None]:
        async with get_client() as client:
            runs = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
            return runs[0].state.type.value, runs[0].state.message

    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        return asyncio.run(read())


def test_retrain_publishes_and_promotes_with_lineage(
    services: Settings, fer_subset: Path, champion_version: str
) -> None:
    assert _latest_run_state(services)[0] == "COMPLETED"
    registry = ModelRegistry.from_settings(services)
    assert champion_version in registry.list_versions()
    manifest = registry.read_manifest(champion_version)
    assert manifest["dataset"]["fingerprint"] == compute_fingerprint(scan_dataset(fer_subset))
    assert manifest["metrics"]["n_test"] == 70
    accuracy = manifest["metrics"]["accuracy"]
    confusion = manifest["metrics"]["confusion"]
    assert accuracy == pytest.approx(sum(confusion[k][k] for k in range(7)) / 70)
    assert manifest["train_config"]["epochs"] == 1
    pointer = registry.champion()
    assert pointer.version == champion_version
    assert pointer.sha256 == manifest["files"]["model.keras"]["sha256"]
    reports = registry.client.list_objects_v2(
        Bucket=services.s3_bucket, Prefix=manifest["reports"].split("/", 3)[3] + "/"
    )
    names = {item["Key"].rsplit("/", 1)[1] for item in reports.get("Contents", [])}
    assert {"metrics.json", "confusion_matrix.png", "history.json", "cleaning.json"} <= names
    cleaning = manifest["cleaning"]
    assert cleaning["train_before"] == 210
    assert cleaning["train_after"] == 210 - sum(cleaning["removed_counts"].values())
    assert cleaning["removed_paths"].endswith("/cleaning.json")


def test_failed_gate_leaves_the_champion(
    services: Settings, fer_subset: Path, champion_version: str
) -> None:
    registry = ModelRegistry.from_settings(services)
    versions_before = registry.list_versions()
    pointer_before = registry.champion()
    with pytest.raises(GateFailed, match="below the floor 0.9900"):
        run_retrain(services, str(fer_subset), QUICK, GateConfig(min_accuracy=0.99))
    state, message = _latest_run_state(services)
    assert state == "FAILED"
    assert "below the floor 0.9900" in message
    assert registry.champion() == pointer_before
    assert registry.list_versions() == versions_before


def test_bad_dataset_fails_before_training(
    services: Settings, fer_subset: Path, tmp_path: Path, champion_version: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(fer_subset, broken)
    shutil.rmtree(broken / "test" / "disgust")
    registry = ModelRegistry.from_settings(services)
    pointer_before = registry.champion()
    runs_before = len(list((Path(services.home_dir) / "runs").iterdir()))
    with pytest.raises(DataQualityError, match="disgust"):
        run_retrain(services, str(broken), QUICK, GateConfig(min_accuracy=0.0))
    assert _latest_run_state(services)[0] == "FAILED"
    assert registry.champion() == pointer_before
    assert len(list((Path(services.home_dir) / "runs").iterdir())) == runs_before
