from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from model.evaluation.gate import GateConfig
from model.registry.store import ModelRegistry
from model.settings import Settings, get_settings
from model.training.config import TrainConfig
from model.training.network import NetworkConfig
from validation.config import QualityConfig

#: One epoch of a small network: the loop's plumbing is under test, not accuracy.
QUICK = TrainConfig(
    epochs=1, batch_size=32, network=NetworkConfig(filters=(16, 32), dense_units=32)
)

#: Count bounds for the 30/10-per-class subset; every share, leakage and copy bound at default.
SUBSET_QUALITY = QualityConfig(
    min_train_images=100, min_test_images=50, min_class_train_images=10, min_class_test_images=5
)


@pytest.fixture(scope="session")
def champion_version(services: Settings, fer_subset: Path) -> str:
    """One successful retrain run on the real subset (no accuracy floor), promoted."""
    from flows.retrain import run_retrain

    return run_retrain(
        services, str(fer_subset), QUICK, GateConfig(min_accuracy=0.0), SUBSET_QUALITY
    )


@pytest.fixture
def registry(services: Settings, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    """A bucket of its own, which the CLI under test uses too (through FER_S3_BUCKET)."""
    monkeypatch.setenv("FER_S3_BUCKET", f"fer-test-{uuid.uuid4().hex[:8]}")
    registry = ModelRegistry.from_settings(get_settings())
    registry.ensure_bucket()
    return registry


def run_that_published(settings: Settings, version: str) -> Any:
    """The flow run whose ``model-version`` artifact names ``version``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["model-version"]))
            )
            (artifact,) = [a for a in artifacts if version in str(a.data)]
            return client.read_flow_run(artifact.flow_run_id)
