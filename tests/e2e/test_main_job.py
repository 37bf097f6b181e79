"""The main job as a user runs it: `fer up`, then the app and the Prefect UI answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from infra.services import free_port
from tests.integration.conftest import SUBSET_QUALITY

pytestmark = pytest.mark.e2e

FER = str(Path(sys.executable).with_name("fer"))


def _wait_http(url: str, process: subprocess.Popen[str], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"`fer up` exited early:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def test_fer_up_trains_promotes_and_serves(tmp_path: Path, fer_subset: Path) -> None:
    env = {
        **os.environ,
        "FER_HOME": str(tmp_path / "home"),
        "FER_DATASET": str(fer_subset),
        "FER_PREFECT_PORT": str(free_port()),
        "FER_S3_PORT": str(free_port()),
        "FER_SERVE_PORT": str(free_port()),
        # `fer up`'s worker asks for the first run every second, not every 10.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    app_url = f"http://127.0.0.1:{env['FER_SERVE_PORT']}/"
    log = tmp_path / "fer-up.log"
    # Count bounds for the 210-image subset, as a user would write them for a small dataset.
    quality = tmp_path / "quality.json"
    quality.write_text(SUBSET_QUALITY.model_dump_json())
    with log.open("w") as out:
        process = subprocess.Popen(
            [FER, "up", "--epochs", "1", "--min-accuracy", "0", "--quality-config", str(quality)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        _wait_http(app_url, process, log, timeout=600)
        output = log.read_text()
        assert "promoted model version" in output
        # One command leaves the schedules live: the deployments and a worker exist.
        assert "deployment retrain/nightly: cron '0 2 * * *' (UTC); health/daily: cron " in output
        assert "; worker started" in output
        assert "completed: http://127.0.0.1:" in output
        # The terminal followed the run through the server: its training progress, last seen.
        assert "training: done after 1 epochs, best val_accuracy 0." in output
        assert f"Prefect UI: http://127.0.0.1:{env['FER_PREFECT_PORT']}" in output
        assert httpx.get(f"http://127.0.0.1:{env['FER_PREFECT_PORT']}/api/health").json() is True
        image = next((fer_subset / "test" / "neutral").iterdir())
        # A 48x48 FER tile is all face: classify the whole image.
        result = Client(app_url, verbose=False).predict(
            handle_file(str(image)), True, api_name="/predict"
        )
        (face,) = result["faces"]
        assert len(face["probabilities"]) == 7
        # The same server answers programs over plain HTTP too.
        with image.open("rb") as photo:
            rest = httpx.post(
                f"{app_url}api/v1/predict",
                files={"image": (image.name, photo)},
                data={"whole_image": "true"},
                timeout=60,
            )
        assert rest.status_code == 200, rest.text
        assert rest.json()["model_version"] == result["model_version"]
        assert rest.json()["faces"][0]["probabilities"] == face["probabilities"]
        assert httpx.get(f"{app_url}readyz", timeout=10).status_code == 200
        models = subprocess.run(
            [FER, "models", "list"], env=env, capture_output=True, text=True, timeout=120
        )
        assert models.returncode == 0
        assert [line for line in models.stdout.splitlines() if line.startswith("* 2")]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = None
        down = subprocess.run(
            [FER, "services", "down"], env=env, capture_output=True, text=True, timeout=120
        )
    assert returncode == 0, "`fer up` must shut down cleanly on SIGTERM"
    assert down.returncode == 0
    assert down.stdout.strip() == "stopped: worker, prefect, seaweedfs", down.stdout
    status = subprocess.run(
        [FER, "services", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.stdout.count("not running") == 3
