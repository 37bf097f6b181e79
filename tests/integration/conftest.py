from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from infra.services import free_port
from model.evaluation.gate import GateConfig
from model.registry.store import ModelRegistry
from model.settings import Settings, get_settings
from model.training.config import TrainConfig
from model.training.network import NetworkConfig
from serving.api import create_app
from serving.app import ChampionWatcher
from serving.images import ImageLimits
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


def events_of_run(settings: Settings, name: str, run_id: Any, timeout: float = 30) -> list[Any]:
    """The events called ``name`` related to a flow run, read back from the server.

    Events reach the server in the background after the run: they are waited for.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    wanted = EventFilter(
        event=EventNameFilter(name=[name]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"]),
    )
    deadline = time.monotonic() + timeout
    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        with get_client(sync_client=True) as client:
            # limit: the client's default (100) is above what the server accepts (50).
            while not client.read_events(wanted, limit=50).events:
                if time.monotonic() > deadline:
                    return []
                time.sleep(0.5)
            time.sleep(1)  # a duplicate would arrive about as late: read once more
            return client.read_events(wanted, limit=50).events


def launch_api(watcher: ChampionWatcher, limits: ImageLimits, **options: Any) -> Iterator[str]:
    """The API and the page on a free port, served by uvicorn in a thread, until the test ends.

    ``options`` go to :func:`serving.api.create_app` (credentials, draining).
    """
    port = free_port()
    app = create_app(watcher, limits, **options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
