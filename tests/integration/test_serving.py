"""The Gradio app serving the champion, called through gradio_client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from infra.services import free_port
from model.registry import ModelRegistry
from model.settings import Settings
from serving.app import ChampionWatcher, make_app, start_watcher

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(services: Settings, champion_version: str) -> Iterator[tuple[ChampionWatcher, str]]:
    watcher = start_watcher(services)
    app = make_app(watcher)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield watcher, f"http://127.0.0.1:{port}/"
    finally:
        app.close()
        watcher.stop()


def _confidences(result: dict) -> dict[str, float]:
    return {item["label"]: item["confidence"] for item in result["confidences"]}


def test_predict_returns_seven_probabilities(
    served: tuple[ChampionWatcher, str], fer_subset: Path, champion_version: str
) -> None:
    watcher, url = served
    assert watcher.predictor.version == champion_version
    assert watcher.predictor.runtime == "tflite"  # the version's verified export
    image = next((fer_subset / "test" / "happy").iterdir())
    result = Client(url, verbose=False).predict(handle_file(str(image)), api_name="/predict")
    confidences = _confidences(result)
    assert set(confidences) == {"angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"}
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-4)
    assert result["label"] == max(confidences, key=confidences.get)


def test_any_size_and_mode_is_accepted(served: tuple[ChampionWatcher, str], tmp_path: Path) -> None:
    _, url = served
    path = tmp_path / "big.png"
    Image.new("RGBA", (640, 480), (10, 200, 30, 255)).save(path)
    result = Client(url, verbose=False).predict(handle_file(str(path)), api_name="/predict")
    assert sum(_confidences(result).values()) == pytest.approx(1.0, abs=1e-4)


def test_new_champion_is_picked_up_without_restart(
    served: tuple[ChampionWatcher, str],
    services: Settings,
    champion_version: str,
    fer_subset: Path,
) -> None:
    watcher, url = served
    registry = ModelRegistry.from_settings(services)
    model_path = registry.download_model(
        champion_version, services.home_dir / "t", registry.champion().sha256
    )
    newer = registry.publish_version(model_path, registry.read_manifest(champion_version))
    registry.promote(newer)
    try:
        # The watcher's own thread (polling every second here) must swap the model in.
        _wait_for_version(watcher, newer)
        image = next((fer_subset / "test" / "sad").iterdir())
        result = Client(url, verbose=False).predict(handle_file(str(image)), api_name="/predict")
        assert len(result["confidences"]) == 7
    finally:
        registry.promote(champion_version)
        _wait_for_version(watcher, champion_version)


def _wait_for_version(watcher: ChampionWatcher, version: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while watcher.predictor.version != version:
        assert time.monotonic() < deadline, f"watcher still serves {watcher.predictor.version}"
        time.sleep(0.2)
