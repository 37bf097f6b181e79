"""The REST API beside the Gradio page, through a real HTTP client against a launched server."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from pydantic import SecretStr
from skimage import data

from infra.services import free_port
from model.errors import InputError, ServiceError
from model.settings import Settings
from serving.access import parse_auth
from serving.api import RequestIdFilter
from serving.app import ChampionWatcher, start_watcher
from serving.images import ImageLimits, load_image
from serving.predict import predict_remote
from tests.integration.conftest import launch_api

pytestmark = pytest.mark.integration

LIMITS = ImageLimits(max_bytes=1024**2, max_pixels=1_000_000, reject_pixels=20_000_000)


@pytest.fixture(scope="module")
def watcher(services: Settings, champion_version: str) -> Iterator[ChampionWatcher]:
    served = start_watcher(services)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def url(watcher: ChampionWatcher) -> Iterator[str]:
    yield from launch_api(watcher, LIMITS)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One good photo and one of each kind of bad upload."""
    folder = tmp_path_factory.mktemp("api-photos")
    astronaut = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(astronaut)
    jpeg = folder / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(jpeg, quality=90)
    files = {
        "good": astronaut,
        "empty": folder / "empty.jpg",
        "text": folder / "notes.jpg",
        "truncated": folder / "truncated.jpg",
        "huge_bytes": folder / "huge.png",
        "huge_pixels": folder / "huge_pixels.png",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("not an image")
    files["truncated"].write_bytes(jpeg.read_bytes()[:5000])
    files["huge_bytes"].write_bytes(astronaut.read_bytes() + b"\0" * (2 * 1024**2))
    Image.new("L", (5000, 5000)).save(files["huge_pixels"])
    return files


def _predict(url: str, path: Path, **headers: str) -> httpx.Response:
    with path.open("rb") as handle:
        return httpx.post(
            f"{url}/api/v1/predict",
            files={"image": (path.name, handle, "application/octet-stream")},
            headers=headers,
            timeout=60,
        )


def test_a_photo_gets_the_pages_json_with_version_and_request_id(
    url: str, watcher: ChampionWatcher, photos: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="serving"):
        answer = _predict(url, photos["good"], **{"X-Request-ID": "trace-42"})
    # The request's log lines name it (`fer serve` puts the id in its log format).
    (line,) = [r for r in caplog.records if "/api/v1/predict" in r.getMessage()]
    assert line.request_id == "trace-42"  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text
    body = answer.json()
    version = watcher.predictor.version
    assert body["model_version"] == version == answer.headers["X-Model-Version"]
    assert answer.headers["X-Request-ID"] == "trace-42"
    (face,) = body["faces"]
    assert set(face) >= {"box", "label", "probabilities"}
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-4
    assert body["model_test_accuracy"] == watcher.served.accuracy
    made = httpx.get(f"{url}/healthz", timeout=10).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)  # none given: one is made


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("empty", 400, "empty"),
        ("text", 415, "not_an_image"),
        ("truncated", 422, "corrupt"),
        ("huge_bytes", 413, "too_large"),
        ("huge_pixels", 413, "too_many_pixels"),
    ],
)
def test_each_bad_upload_gets_its_status_and_the_pages_message(
    url: str, photos: dict[str, Path], name: str, status: int, reason: str
) -> None:
    answer = _predict(url, photos[name])
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == reason
    with pytest.raises(InputError) as page:
        load_image(photos[name], LIMITS)
    assert answer.json()["detail"] == str(page.value)


def test_a_body_far_above_the_limit_is_refused_before_it_is_read(url: str) -> None:
    import json
    import socket

    host, port = url.removeprefix("http://").split(":")
    declared = 50 * LIMITS.max_bytes
    # Only the headers are sent: the answer must come before any of the body is read.
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            f"POST /api/v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
        )
        reply = b""
        while b"}" not in reply:
            chunk = connection.recv(65536)
            assert chunk, reply
            reply += chunk
    head, _, body = reply.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413")
    problem = json.loads(body)
    assert problem["error"] == "too_large"
    assert problem["detail"].startswith("the file is 50.0 MB, above the 1.0 MB limit")


def test_probes_model_docs_and_the_page_answer_beside_the_api(
    url: str, watcher: ChampionWatcher
) -> None:
    version = watcher.predictor.version
    assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["model_version"] == version
    model = httpx.get(f"{url}/api/v1/model", timeout=10).json()
    assert model["model_version"] == version and model["runtime"] in ("tflite", "keras")
    schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
    assert {"/api/v1/predict", "/api/v1/model", "/readyz", "/healthz", "/metrics"} <= set(
        schema["paths"]
    )
    assert httpx.get(f"{url}/docs", timeout=10).status_code == 200
    page = httpx.get(f"{url}/", timeout=30)
    assert page.status_code == 200 and "gradio" in page.text.lower()


def test_metrics_count_requests_errors_faces_and_name_the_version(
    url: str, watcher: ChampionWatcher, photos: dict[str, Path]
) -> None:
    def scrape() -> str:
        return httpx.get(f"{url}/metrics", timeout=10).text

    def value(text: str, sample: str) -> float:
        found = re.search(rf"^{re.escape(sample)} ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    ok = 'fer_requests_total{endpoint="predict",status="200"}'
    refused = 'fer_errors_total{endpoint="predict",reason="not_an_image"}'
    before = scrape()
    _predict(url, photos["good"])
    _predict(url, photos["text"])
    after = scrape()
    assert value(after, ok) == value(before, ok) + 1
    assert value(after, refused) == value(before, refused) + 1
    assert value(after, "fer_faces_per_request_count") >= 1
    assert value(after, f'fer_model_info{{version="{watcher.predictor.version}"}}') == 1
    assert 0 <= value(after, "fer_store_last_answer_age_seconds") < 60


def test_before_a_model_is_promoted_readyz_and_predict_say_so(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    empty = ChampionWatcher(None, tmp_path / "models", poll_seconds=1)
    for url in launch_api(empty, LIMITS):
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["reason"] == "no model loaded yet"
        answer = _predict(url, photos["good"])
        assert answer.status_code == 503 and "run `fer retrain`" in answer.json()["detail"]
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


def test_with_user_passwords_the_page_and_api_ask_and_the_probes_stay_open(
    watcher: ChampionWatcher, photos: dict[str, Path]
) -> None:
    credentials = parse_auth("alice:wonderland, bob:builder")
    alice = _basic("alice", "wonderland")
    for url in launch_api(watcher, LIMITS, credentials=credentials):
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 401 and page.headers["WWW-Authenticate"].startswith("Basic")
        assert httpx.get(f"{url}/", headers={"Authorization": alice}, timeout=10).status_code == 200
        refused = _predict(url, photos["good"])
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert "FER_SERVE_AUTH" in refused.json()["detail"]
        assert refused.headers["X-Request-ID"]  # refusals are traced like any answer
        wrong = _predict(url, photos["good"], Authorization=_basic("alice", "builder"))
        assert wrong.status_code == 401
        assert _predict(url, photos["good"], Authorization=alice).status_code == 200
        assert _predict(url, photos["good"], Authorization=_basic("bob", "builder")).is_success
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(f"{url}{probe}", timeout=10).status_code == 200, probe
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'fer_errors_total{endpoint="predict",reason="unauthorized"} 2.0' in metrics
        assert 'fer_errors_total{endpoint="page",reason="unauthorized"} 1.0' in metrics


def test_with_a_token_programs_send_bearer_and_browsers_give_it_as_password(
    watcher: ChampionWatcher, photos: dict[str, Path]
) -> None:
    token = "tok-" + "7" * 28
    for url in launch_api(watcher, LIMITS, credentials=parse_auth(token)):
        assert _predict(url, photos["good"], Authorization=f"Bearer {token}").status_code == 200
        assert _predict(url, photos["good"], Authorization="Bearer nope").status_code == 401
        browser = _basic("anyone", token)
        assert httpx.get(f"{url}/", headers={"Authorization": browser}, timeout=10).is_success
        # `fer predict --url` sends FER_SERVE_AUTH, and says so when it is missing or wrong.
        (outcome,) = predict_remote([photos["good"]], url, auth=SecretStr(token))
        assert outcome.answer is not None and outcome.answer["faces"]
        for auth in (None, SecretStr("other")):
            with pytest.raises(ServiceError, match="asks for credentials.*FER_SERVE_AUTH"):
                list(predict_remote([photos["good"]], url, auth=auth))


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_fer_serve_drains_on_sigterm_finishes_requests_in_flight_and_logs_json(
    watcher: ChampionWatcher, photos: dict[str, Path]
) -> None:
    port = free_port()
    fer = Path(sys.executable).with_name("fer")
    process = subprocess.Popen(
        [str(fer), "serve"],
        env={
            **os.environ,
            "FER_SERVE_PORT": str(port),
            "FER_SERVE_DRAIN_SECONDS": "2",
            "FER_LOG_FORMAT": "json",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url)
        # A request in flight: its headers and half its body are sent before the signal.
        request = _multipart(photos["good"].read_bytes(), "drain-1", port)
        in_flight = socket.create_connection(("127.0.0.1", port), timeout=30)
        in_flight.sendall(request[: len(request) // 2])
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["reason"].startswith("draining")
        assert _predict(url, photos["good"]).status_code == 200  # still served while draining
        time.sleep(2.5)  # the drain is over: the server accepts no new connection
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=5)
        in_flight.sendall(request[len(request) // 2 :])
        answer = _read_response(in_flight)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert b'"faces"' in answer
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output[-3000:]
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(
        line["request_id"] == "drain-1" and "/api/v1/predict -> 200" in line["message"]
        for line in lines
    ), output[-3000:]
    assert any(line["logger"] == "serving.server" for line in lines)  # the drain was logged
    assert not [line for line in output.splitlines() if " INFO " in line]  # no text log lines


def _wait_ready(process: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "`fer serve` did not become ready"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


def _multipart(photo: bytes, request_id: str, port: int) -> bytes:
    """A whole ``POST /api/v1/predict`` request, as bytes on the wire."""
    boundary = "fer-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /api/v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _read_response(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    connection.close()
    return b"".join(chunks)


def test_readyz_turns_503_once_the_store_has_been_silent_too_long(
    watcher: ChampionWatcher, tmp_path: Path
) -> None:
    cached = ChampionWatcher(None, tmp_path / "models", poll_seconds=3600)
    cached.serve_local(watcher.predictor)
    for url in launch_api(cached, LIMITS, max_stale_seconds=60):
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        cached.last_checked, cached.last_error = time.time() - 30, "connection refused"
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200  # silent, but not for long: the cache is fresh enough
        cached.last_checked = time.time() - 600
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert "has not answered for 600 s" in ready.json()["reason"]
        assert "FER_SERVE_MAX_STALE_SECONDS" in ready.json()["reason"]
        cached.last_error = None  # the store answered again
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
