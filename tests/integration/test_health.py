"""The daily health report, end to end: a served app on loopback, real requests, the real server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from skimage import data

from infra.services import free_port
from model.contract import CLASSES
from model.monitoring.history import SNAPSHOTS, save_snapshot
from model.monitoring.readings import parse_metrics
from model.monitoring.report import NO_METRICS, Snapshot
from model.registry.store import ModelRegistry
from model.settings import Settings
from serving.app import start_watcher
from serving.images import ImageLimits
from tasks.events import SERVING_DRIFT
from tasks.health import CHART_KEY, REPORT_KEY
from tests.integration.conftest import events_of_run, launch_api

pytestmark = pytest.mark.integration

LIMITS = ImageLimits(max_bytes=1024**2, max_pixels=1_000_000, reject_pixels=20_000_000)


@pytest.fixture(scope="module")
def url(services: Settings, champion_version: str) -> Iterator[str]:
    watcher = start_watcher(services)
    try:
        yield from launch_api(watcher, LIMITS)
    finally:
        watcher.stop()


@pytest.fixture
def registry(services: Settings) -> ModelRegistry:
    """The session's store, without earlier health records (the champion stays)."""
    registry = ModelRegistry.from_settings(services)
    for key in registry.list_keys("health/"):
        registry.client.delete_object(Bucket=registry.bucket, Key=key)
    return registry


def _run_daily(settings: Settings, metrics_url: str) -> Any:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.health import daily

    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        state = daily(metrics_urls=[metrics_url], min_predictions=5, return_state=True)
    assert state.is_completed(), state.message
    return state


def _artifacts(settings: Settings, run_id: Any) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: settings.prefect_url}):
        with get_client(sync_client=True) as client:
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
    return {artifact.key: artifact for artifact in found}


def _rows(artifact: Any) -> dict[str, dict[str, str]]:
    import json

    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    return {row["measure"]: row for row in table}


def _burst(url: str, tmp_path: Path) -> None:
    """Ten photos through the API, two through the page, three refused uploads."""
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    with httpx.Client(timeout=60) as http:
        for _ in range(10):
            answer = http.post(f"{url}/api/v1/predict", files={"image": photo.read_bytes()})
            assert answer.status_code == 200
        for _ in range(3):
            refused = http.post(f"{url}/api/v1/predict", files={"image": b"not an image"})
            assert refused.status_code == 415
    page = Client(f"{url}/", verbose=False)
    for _ in range(2):
        page.predict(handle_file(str(photo)), False, api_name="/predict")


def test_the_daily_report_covers_what_was_served_since_the_last_one_and_flags_drift(
    services: Settings, url: str, registry: ModelRegistry, tmp_path: Path
) -> None:
    _run_daily(services, f"{url}/metrics")  # the baseline: everything since the app started
    _burst(url, tmp_path)
    # The week before: only an emotion the app has not predicted at all, so it must move.
    served = parse_metrics(url, httpx.get(f"{url}/metrics", timeout=10).text)
    predicted = {dict(labels).get("emotion") for (name, labels) in served.counts}
    absent = next(emotion for emotion in CLASSES if emotion not in predicted)
    save_snapshot(registry, Snapshot(datetime.now(UTC) - timedelta(days=8), {}, {absent: 200}))

    state = _run_daily(services, f"{url}/metrics")

    run_id = state.state_details.flow_run_id
    artifacts = _artifacts(services, run_id)
    rows = _rows(artifacts[REPORT_KEY])
    assert rows["photos analysed"]["value"] == "12"  # the burst only: the baseline came before
    assert rows["requests refused"]["value"] == "3"
    assert rows["refused: not_an_image"] == {
        "measure": "refused: not_an_image", "value": "20.0%", "note": "3 of 15 requests"
    }  # fmt: skip
    faces = float(rows["faces per photo"]["value"])
    assert faces >= 1
    assert sum(int(rows[f"predicted {e}"]["value"]) for e in CLASSES) == round(12 * faces)
    assert rows["mean top-class confidence"]["value"].endswith("%")
    p50, p95 = rows["predict latency p50 / p95"]["value"].split(" / ")
    assert p50.endswith(" ms") and p95.endswith(" ms")
    champion = registry.champion()
    assert champion is not None and rows["champion"]["value"] == champion.version
    assert float(rows["champion age"]["value"].split()[0]) < 1
    assert "POSSIBLE DRIFT" in rows[f"predicted {absent}"]["note"]
    assert f"possible drift: {absent} 100% -> 0%" in artifacts[REPORT_KEY].description

    chart = artifacts[CHART_KEY].data
    assert httpx.get(chart, timeout=10).content.startswith(b"\x89PNG")
    (event,) = events_of_run(services, SERVING_DRIFT, run_id)
    assert absent in event.payload["moved"] and event.payload["champion"] == champion.version
    # The seeded week and two reports: each report keeps its snapshot for the next one.
    assert len(registry.list_keys(f"{SNAPSHOTS}/")) == 3


def test_without_a_replica_answering_the_report_says_so_and_keeps_no_snapshot(
    services: Settings, registry: ModelRegistry
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/metrics"

    state = _run_daily(services, nowhere)

    assert state.result().startswith(f"{NO_METRICS} ({nowhere}: ConnectError")
    artifacts = _artifacts(services, state.state_details.flow_run_id)
    rows = _rows(artifacts[REPORT_KEY])
    assert rows["serving metrics"]["value"] == NO_METRICS
    assert rows["replicas answering"]["value"] == "0 of 1"
    assert rows["champion age"]["value"].endswith("days")
    assert registry.list_keys(f"{SNAPSHOTS}/") == []
