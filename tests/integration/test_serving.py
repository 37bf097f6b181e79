"""The Gradio app serving the champion, called through gradio_client as API users do."""

from __future__ import annotations

import ssl
import threading
import time
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
from model.dataset import CLASSES
from model.registry import ModelRegistry
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


def test_a_new_champion_swaps_in_while_requests_run(
    served: tuple[ChampionWatcher, str], services: Settings, astronaut: Path
) -> None:
    watcher, url = served
    registry = ModelRegistry.from_settings(services)
    # Whatever other tests promoted last is the champion being served now.
    champion_version = watcher.predictor.version
    model_path = registry.download_model(
        champion_version, services.home_dir / "t", registry.champion().sha256
    )
    newer = registry.publish_version(model_path, registry.read_manifest(champion_version))
    answered: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def keep_asking() -> None:
        own = _client(url)
        while not stop.is_set():
            try:
                answered.append(_predict(own, astronaut)["model_version"])
            except BaseException as error:  # noqa: BLE001 - every failure counts
                errors.append(error)

    workers = [threading.Thread(target=keep_asking) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1)
        registry.promote(newer)
        _wait_for_version(watcher, newer)
        time.sleep(1.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        registry.promote(champion_version)
        _wait_for_version(watcher, champion_version)
    assert not errors, errors[:3]
    assert answered[0] == champion_version and answered[-1] == newer
    switch = answered.index(newer)
    # Answers come from one model or the other, and once the new one answered, only it does
    # (requests still in flight at the swap may finish on the old one, but none start there).
    assert set(answered) == {champion_version, newer}
    assert answered[switch:].count(champion_version) <= len(workers)


def test_serving_goes_on_while_the_store_is_unreachable(
    served: tuple[ChampionWatcher, str], client: Client, services: Settings, astronaut: Path
) -> None:
    watcher, _ = served
    version = watcher.predictor.version
    reachable = watcher.registry
    # The store's address now leads nowhere, as when the store is down.
    watcher.registry = ModelRegistry.from_settings(
        Settings(**{**services.model_dump(), "s3_port": free_port()})
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
