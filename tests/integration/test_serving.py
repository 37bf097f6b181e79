"""The Gradio app serving the champion, called through gradio_client as API users do."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from skimage import data

from infra.services import free_port
from model.contract import CLASSES
from model.errors import StoreUnavailable
from model.registry.store import ModelRegistry
from model.settings import Settings
from serving.app import ChampionWatcher, describe, make_app, start_watcher
from serving.faces import detect_faces
from serving.images import ImageLimits

pytestmark = pytest.mark.integration

LIMITS = ImageLimits(max_bytes=1024**2, max_pixels=1_000_000, reject_pixels=20_000_000)


@pytest.fixture(scope="module")
def served(services: Settings, champion_version: str) -> Iterator[tuple[ChampionWatcher, str]]:
    watcher = start_watcher(services)
    app = make_app(watcher, LIMITS)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield watcher, f"http://127.0.0.1:{port}/"
    finally:
        app.close()
        watcher.stop()


@pytest.fixture(scope="module")
def client(served: tuple[ChampionWatcher, str]) -> Client:
    return _client(served[1])


def _client(url: str) -> Client:
    """A client built as the README shows: one TLS context, reused for every HTTP call."""
    return Client(url, verbose=False, ssl_verify=ssl.create_default_context())


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def _predict(client: Client, path: Path, whole_image: bool = False) -> dict[str, Any]:
    return client.predict(handle_file(str(path)), whole_image, api_name="/predict")


def test_predict_returns_each_face_with_box_and_probabilities(
    served: tuple[ChampionWatcher, str], client: Client, astronaut: Path, services: Settings
) -> None:
    answer = _predict(client, astronaut)
    registry = ModelRegistry.from_settings(services)
    version = served[0].predictor.version
    assert answer["model_version"] == version == registry.champion().version
    manifest = registry.read_manifest(version)
    assert answer["model_test_accuracy"] == pytest.approx(manifest["metrics"]["accuracy"])
    (face,) = answer["faces"]
    assert 150 < face["box"]["x"] < 200 and 80 < face["box"]["width"] < 130
    assert list(face["probabilities"]) == list(CLASSES)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)


def test_faces_of_a_composed_photo_are_all_found(
    client: Client, fer2013_root: Path, tmp_path: Path
) -> None:
    # FER2013 test tiles the detector finds on their own, three of them side by side.
    tiles = []
    for label in ("happy", "surprise", "neutral", "sad", "angry"):
        for path in sorted((fer2013_root / "test" / label).iterdir())[:10]:
            tile = Image.open(path).convert("L").resize((144, 144))
            alone = Image.new("L", (240, 240), 128)
            alone.paste(tile, (48, 48))
            if len(detect_faces(np.asarray(alone))) == 1:
                tiles.append(tile)
                break
        if len(tiles) == 3:
            break
    canvas = Image.new("L", (720, 240), 128)
    for index, tile in enumerate(tiles):
        canvas.paste(tile, (48 + 240 * index, 48))
    path = tmp_path / "three.png"
    canvas.save(path)
    answer = _predict(client, path)
    assert len(answer["faces"]) == 3
    lefts = [face["box"]["x"] for face in answer["faces"]]
    assert all(abs(left - (48 + 240 * i)) < 40 for i, left in enumerate(lefts)), lefts


def test_no_face_is_said_and_the_whole_image_can_be_classified(
    client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "wall.png"
    Image.new("RGB", (320, 240), (180, 170, 160)).save(path)
    answer = _predict(client, path)
    assert answer["faces"] == [] and "no face found" in answer["notes"][-1]
    whole = _predict(client, path, whole_image=True)
    assert whole["whole_image"] and len(whole["faces"]) == 1


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    text = tmp_path / "notes.txt"
    text.write_text("not a photo\n")
    good = tmp_path / "gradient.jpg"
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (256, 1))).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    heavy = tmp_path / "heavy.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (800, 800, 3), np.uint8)).save(heavy)
    huge = tmp_path / "huge.png"
    Image.new("L", (5000, 5000), 0).save(huge)
    return {
        "corrupt file": (noise, "not a readable image"),
        "non-image": (text, "not a readable image"),
        "truncated JPEG": (cut, "corrupt or truncated"),
        "too many bytes": (heavy, "above the 1.0 MB limit"),
        "too many pixels": (huge, "too many pixels (5000x5000)"),
    }


def test_bad_inputs_get_a_clear_message_and_the_server_stays_up(
    client: Client, astronaut: Path, tmp_path: Path
) -> None:
    for what, (path, message) in _bad_inputs(tmp_path).items():
        with pytest.raises(AppError, match=message.replace("(", r"\(").replace(")", r"\)")):
            _predict(client, path)
        assert len(_predict(client, astronaut)["faces"]) == 1, f"server broken after {what}"


def test_awkward_formats_are_used_with_a_note(
    client: Client, astronaut: Path, tmp_path: Path
) -> None:
    portrait = Image.open(astronaut)
    animated = tmp_path / "anim.gif"
    frames = [portrait, portrait.rotate(10), portrait.rotate(20)]
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=80, loop=0)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.asarray(portrait.convert("L"), dtype=np.uint16) * 257).save(deep)
    cmyk = tmp_path / "cmyk.jpg"
    portrait.convert("CMYK").save(cmyk)
    rgba = tmp_path / "rgba.png"
    portrait.convert("RGBA").save(rgba)
    big = tmp_path / "big.jpg"
    portrait.resize((1536, 1536)).save(big, quality=70)
    expected = {
        animated: "animated image with 3 frames",
        deep: "16-bit image scaled to 8 bits",
        cmyk: "CMYK image converted to RGB",
        rgba: "transparent areas shown on white",
        big: "large image 1536x1536 downscaled to 1000x1000",
    }
    for path, note in expected.items():
        answer = _predict(client, path)
        assert note in " ".join(answer["notes"]), (path.name, answer["notes"])
        assert len(answer["faces"]) == 1, path.name


@pytest.fixture(scope="module")
def other_version(services: Settings, champion_version: str, tmp_path_factory: Any) -> str:
    """A second version whose every answer differs from the champion's: its output shifted."""
    import keras

    from model.inference.predictor import load_keras_model

    registry = ModelRegistry.from_settings(services)
    folder = tmp_path_factory.mktemp("other")
    manifest = registry.read_manifest(champion_version)
    path = registry.download_model(
        champion_version, folder, manifest["files"]["model.keras"]["sha256"]
    )
    network = load_keras_model(path)
    (*_, output) = [layer for layer in network.layers if isinstance(layer, keras.layers.Dense)]
    kernel, bias = output.get_weights()
    output.set_weights([kernel, bias + np.linspace(-2.0, 2.0, len(bias), dtype=bias.dtype)])
    other = folder / "other" / "model.keras"
    other.parent.mkdir()
    network.save(other)
    return registry.publish_version(other, {"metrics": manifest["metrics"]})


def _probabilities(answer: dict[str, Any]) -> np.ndarray:
    (face,) = answer["faces"]
    return np.array([face["probabilities"][name] for name in CLASSES])


def _wait_until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def test_a_new_champion_swaps_in_while_requests_run(
    served: tuple[ChampionWatcher, str], services: Settings, astronaut: Path, other_version: str
) -> None:
    watcher, url = served
    registry = ModelRegistry.from_settings(services)
    # Whatever other tests promoted last is the champion being served now.
    first = watcher.predictor.version
    answered: list[tuple[str, np.ndarray]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def keep_asking() -> None:
        own = _client(url)
        while not stop.is_set():
            try:
                answer = _predict(own, astronaut)
                answered.append((answer["model_version"], _probabilities(answer)))
            except BaseException as error:  # noqa: BLE001 - every failure counts
                errors.append(error)

    def answers_from(version: str) -> int:
        return sum(v == version for v, _ in answered)

    workers = [threading.Thread(target=keep_asking) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        _wait_until(lambda: answers_from(first) >= 3 or errors, "the first model answered")
        registry.promote(other_version)
        _wait_for_version(watcher, other_version)
        _wait_until(lambda: answers_from(other_version) >= 6 or errors, "the new model answered")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        registry.promote(first)
        _wait_for_version(watcher, first)
    assert not errors, errors[:3]
    versions = [version for version, _ in answered]
    assert versions[0] == first and versions[-1] == other_version
    assert set(versions) == {first, other_version}
    # Every answer came wholly from one model: its version and its probabilities agree.
    reference = {version: probabilities for version, probabilities in answered}
    for version, probabilities in answered:
        np.testing.assert_allclose(probabilities, reference[version], atol=1e-5)
    assert np.abs(reference[first] - reference[other_version]).max() > 0.02
    # Once the new one answered, only it does (requests in flight at the swap may finish on
    # the old one, but none start there).
    switch = versions.index(other_version)
    assert versions[switch:].count(first) <= len(workers)


def test_a_tampered_champion_is_refused_and_the_verified_model_serves_on(
    served: tuple[ChampionWatcher, str],
    client: Client,
    services: Settings,
    astronaut: Path,
    tmp_path: Path,
) -> None:
    watcher, _ = served
    version = watcher.predictor.version
    registry = ModelRegistry.from_settings(services)
    # Bytes no earlier test published, so no cache holds a file that verifies against them.
    published = tmp_path / "model.keras"
    published.write_bytes(f"a model published once, {uuid.uuid4()}".encode())
    tampered = registry.publish_version(published, {"metrics": {"accuracy": 0.5}})
    # Replaced in the store after it was published (a bad sync, a hand edit, an attacker).
    registry.client.put_object(
        Bucket=registry.bucket, Key=f"models/{tampered}/model.keras", Body=b"not that model"
    )
    registry.promote(tampered)
    try:
        _wait_until(lambda: watcher.refused is not None, "serving refused the tampered champion")
        assert watcher.predictor.version == version
        answer = _predict(client, astronaut)
        assert answer["model_version"] == version
        notes = " ".join(answer["notes"])
        assert f"champion {tampered} was refused" in notes and "sha256" in notes, notes
        assert f"champion {tampered} was refused" in describe(watcher)
    finally:
        registry.promote(version)
    _wait_until(lambda: watcher.refused is None, "the refusal was cleared")
    assert watcher.predictor.version == version


class HungStore:
    """A TCP port that accepts connections and never answers, as a hung store does."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self._held.append(self._listener.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self._listener.close()
        for held in self._held:
            held.close()


@pytest.mark.parametrize("outage", ["refused", "hung"])
def test_serving_starts_from_its_verified_cache_while_the_store_is_down(
    served: tuple[ChampionWatcher, str], services: Settings, outage: str
) -> None:
    running, _ = served  # it verified and recorded the model it serves
    hung = HungStore()
    port = hung.port if outage == "hung" else free_port()
    down = Settings(**{**services.model_dump(), "s3_port": port})
    started: list[ChampionWatcher] = []
    try:
        # In a thread: a hung store must be noticed within the poll interval, not minutes.
        starting = threading.Thread(target=lambda: started.append(start_watcher(down)))
        starting.start()
        starting.join(timeout=30)
        assert started, f"serving did not start within 30 s with a {outage} store"
    finally:
        hung.close()
    (watcher,) = started
    try:
        assert watcher.predictor.version == running.predictor.version
        assert "the model store has not answered" in describe(watcher)
        # The store is back: the warning goes at the next poll.
        watcher.registry = ModelRegistry.from_settings(services)
        _wait_until(lambda: watcher.staleness() is None, "the warning cleared")
    finally:
        watcher.stop()


def test_serving_without_a_cached_model_says_the_store_is_down(
    services: Settings, tmp_path: Path
) -> None:
    down = Settings(**{**services.model_dump(), "s3_port": free_port(), "home": tmp_path})
    with pytest.raises(StoreUnavailable, match="no verified model in the local cache"):
        start_watcher(down)


def test_serving_goes_on_while_the_store_is_unreachable(
    served: tuple[ChampionWatcher, str], client: Client, services: Settings, astronaut: Path
) -> None:
    watcher, _ = served
    version = watcher.predictor.version
    reachable = watcher.registry
    # The store's address now leads nowhere, as when the store is down; one attempt per
    # poll, as the app's own client makes.
    watcher.registry = ModelRegistry.from_settings(
        Settings(**{**services.model_dump(), "s3_port": free_port()}), timeout=1.0
    )
    try:
        deadline = time.monotonic() + 60
        while watcher.staleness() is None:
            assert time.monotonic() < deadline, "the watcher never noticed the store was gone"
            time.sleep(0.5)
        answer = _predict(client, astronaut)
        assert answer["model_version"] == version and len(answer["faces"]) == 1
        assert any("model store has not answered" in note for note in answer["notes"])
        assert "**Warning:** the model store has not answered" in describe(watcher)
    finally:
        watcher.registry = reachable
    deadline = time.monotonic() + 30
    while watcher.staleness() is not None:
        assert time.monotonic() < deadline, "the warning stayed after the store came back"
        time.sleep(0.5)


def _wait_for_version(watcher: ChampionWatcher, version: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while watcher.predictor.version != version:
        assert time.monotonic() < deadline, f"watcher still serves {watcher.predictor.version}"
        time.sleep(0.2)


def test_fer_serve_started_from_a_script_stops_on_sigint(
    served: tuple[ChampionWatcher, str], services: Settings
) -> None:
    import httpx

    port = free_port()
    fer = Path(sys.executable).with_name("fer")
    process = subprocess.Popen(
        ["bash", "-c", f'trap "" INT; exec {fer} serve'],  # SIGINT arrives ignored
        env={**os.environ, "FER_SERVE_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def answers() -> bool:
        assert process.poll() is None, process.communicate()[0][-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait_until(answers, "`fer serve` answered", timeout=180)
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output[-3000:]
