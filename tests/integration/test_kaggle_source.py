"""kaggle:// through the real kagglehub client against a local stand-in for Kaggle's API.

kagglehub has no endpoint setting for production; its LOCALHOST environment sends requests to
http://localhost, and the standard HTTP_PROXY variable routes them to the stand-in here.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from model.data.sources import acquire_dataset
from model.errors import DatasetError
from model.settings import Settings
from tests.unit.helpers import write_fer_tree

pytestmark = pytest.mark.integration

API = "/api/v1/datasets.DatasetApiService/"


class KaggleStandIn(http.server.BaseHTTPRequestHandler):
    """Answers GetDataset and DownloadDataset the way Kaggle does (302 to the archive)."""

    archive = b""
    status = 200
    calls: list[str] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)) or b"{}")
        path = urlsplit(self.path).path
        type(self).calls.append(path.rsplit("/", 1)[-1])
        json_type = {"Content-Type": "application/json"}
        if self.status != 200:
            message = json.dumps({"code": self.status, "message": "stand-in refuses"}).encode()
            return self._reply(self.status, message, json_type)
        if (request.get("ownerSlug"), request.get("datasetSlug")) != ("msambare", "fer2013"):
            return self._reply(404, b'{"code": 404, "message": "no such dataset"}', json_type)
        if path == API + "GetDataset":
            return self._reply(200, b'{"currentVersionNumber": 1}', json_type)
        if path == API + "DownloadDataset":
            return self._reply(302, b"", {"Location": "http://localhost/files/fer2013.zip"})
        return self._reply(404, b"{}", json_type)

    def do_GET(self) -> None:
        type(self).calls.append("archive")
        self._reply(200, self.archive, {"Content-Type": "application/zip"})


@pytest.fixture
def kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[KaggleStandIn]]:
    tree = write_fer_tree(tmp_path / "kaggle-data", per_class=1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(tree.rglob("*.png")):
            bundle.write(path, path.relative_to(tree).as_posix())
    KaggleStandIn.archive, KaggleStandIn.status, KaggleStandIn.calls = buffer.getvalue(), 200, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KaggleStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("NO_PROXY", "no_proxy", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-config"))
    monkeypatch.delenv("KAGGLEHUB_CACHE", raising=False)
    try:
        yield KaggleStandIn
    finally:
        server.shutdown()


def test_kaggle_dataset_is_downloaded_once(kaggle: type[KaggleStandIn], tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    first = acquire_dataset("kaggle://msambare/fer2013", settings)
    assert kaggle.calls == ["GetDataset", "DownloadDataset", "archive"]
    assert first.root.is_relative_to(settings.home_dir / "downloads" / "kaggle")
    kaggle.calls.clear()
    second = acquire_dataset("kaggle://msambare/fer2013", settings)
    assert second.fingerprint == first.fingerprint
    assert kaggle.calls == ["GetDataset"]  # version check only: nothing downloaded


@pytest.mark.parametrize(("status", "hint"), [(401, "KAGGLE_USERNAME"), (404, "no such dataset")])
def test_kaggle_failure_says_what_to_do(
    kaggle: type[KaggleStandIn], tmp_path: Path, status: int, hint: str
) -> None:
    kaggle.status = status
    with pytest.raises(DatasetError) as error:
        acquire_dataset("kaggle://msambare/fer2013", Settings(home=tmp_path / "home"))
    assert hint.lower() in str(error.value).lower() and "FER_DATASET" in str(error.value)


def test_unreachable_kaggle_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra.services import free_port

    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(DatasetError, match="could not be reached"):
        acquire_dataset("kaggle://msambare/fer2013", Settings(home=tmp_path / "home"))
