"""The app in a real browser: headless Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from infra.browser import CHROMIUM as DEBIAN_CHROMIUM
from infra.browser import CHROMIUM_ARGS
from infra.services import free_port
from model.contract import CLASSES
from model.settings import Settings
from serving.app import make_app, start_watcher

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("FER_TEST_CHROMIUM", DEBIAN_CHROMIUM))


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed here with apt when it is missing (Playwright's own
    browser download needs the internet)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    output = ""
    for step in ([install], [["apt-get", "update"], install]):
        if CHROMIUM.exists() or not shutil.which("apt-get"):
            break
        for command in step:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=900, check=False, env=env
            )
            output = done.stdout[-1500:] + done.stderr[-1500:]
    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's package (`apt-get install -y "
            f"chromium`) or point FER_TEST_CHROMIUM at a Chromium binary\n{output}"
        )
    return CHROMIUM


@pytest.fixture
def app(services: Settings, champion_version: str) -> Iterator[tuple[str, str]]:
    """The app's address and the version it serves (the champion now)."""
    watcher = start_watcher(services)
    app = make_app(watcher)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", watcher.predictor.version
    finally:
        app.close()
        watcher.stop()


def test_a_user_uploads_a_photo_and_sees_the_faces_emotion(
    chromium: Path, app: tuple[str, str], services: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    app_url, version = app
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo, quality=90)
    screenshot = services.home_dir / "screenshots" / "serving-app.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), args=list(CHROMIUM_ARGS)
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app_url, wait_until="networkidle")
        expect(page.get_by_text(f"Model version {version}")).to_be_visible()
        page.locator("input[type=file]").first.set_input_files(str(photo))
        page.get_by_role("button", name="Find faces and emotions").click()
        expect(page.get_by_text("Face 1:")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("1 face(s)")).to_be_visible()
        bars = page.locator(".fer-face").first.inner_text()
        assert all(label in bars for label in CLASSES), bars
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1_000)  # the output image's fade-in
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert screenshot.stat().st_size > 10_000
