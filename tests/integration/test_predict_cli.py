"""`fer predict`: photos on disk through the champion from the store, or a running server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from flows.cli import app
from model.settings import Settings
from serving.app import ChampionWatcher, start_watcher
from serving.images import ImageLimits
from tests.integration.conftest import launch_api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def album(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two photos of one face each, and a file that is not a photo beside it."""
    folder = tmp_path_factory.mktemp("album")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.astronaut()).save(folder / "again.jpg", quality=90)
    (folder.parent / "notes.jpg").write_text("not an image")
    return folder


def _run(*args: str) -> object:
    return CliRunner().invoke(app, ["predict", *args])


def test_photos_and_folders_with_the_champion_as_a_table_and_as_json(
    services: Settings, champion_version: str, album: Path
) -> None:
    table = _run(str(album / "astronaut.png"))
    assert table.exit_code == 0, table.output
    assert "1 face(s), model " in table.output and "face 1 at " in table.output

    lines = _run(str(album), "--json")
    assert lines.exit_code == 0, lines.output
    answers = [json.loads(line) for line in lines.output.splitlines()]
    assert [Path(a["file"]).name for a in answers] == ["again.jpg", "astronaut.png"]
    assert all(len(a["faces"]) == 1 and len(a["faces"][0]["probabilities"]) == 7 for a in answers)


def test_a_refused_photo_is_named_with_the_reason_and_exits_1(
    services: Settings, champion_version: str, album: Path
) -> None:
    result = _run(str(album / "astronaut.png"), str(album.parent / "notes.jpg"))
    assert result.exit_code == 1
    assert "1 face(s)" in result.output  # the good photo was still answered
    assert "notes.jpg: refused: this file is not a readable image" in result.output


@pytest.fixture(scope="module")
def server(services: Settings, champion_version: str) -> Iterator[tuple[ChampionWatcher, str]]:
    watcher = start_watcher(services)
    try:
        for url in launch_api(watcher, ImageLimits()):
            yield watcher, url
    finally:
        watcher.stop()


def test_url_asks_a_running_server_and_gets_the_same_answer(
    server: tuple[ChampionWatcher, str], album: Path
) -> None:
    watcher, url = server
    photo = str(album / "astronaut.png")
    remote = _run(photo, "--url", url, "--json")
    assert remote.exit_code == 0, remote.output
    answer = json.loads(remote.output)
    assert answer["model_version"] == watcher.predictor.version
    local = json.loads(_run(photo, "--model", watcher.predictor.version, "--json").output)
    assert answer["faces"] == local["faces"]

    refused = _run(str(album.parent / "notes.jpg"), "--url", url)
    assert refused.exit_code == 1 and "not a readable image" in refused.output
    gone = _run(photo, "--url", "http://127.0.0.1:9/")
    assert gone.exit_code == 1 and "cannot reach" in gone.output
