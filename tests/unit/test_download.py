"""download_url against a local stdlib HTTP stand-in (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from model.data import download
from model.data.download import download_url, split_sha256_fragment
from model.errors import DatasetError

pytestmark = pytest.mark.unit

PAYLOAD_SIZE = 3 * 1024 * 1024 + 123
DATA_PATH = "/data/fer.zip"


@dataclass
class ServerState:
    """What the stand-in serves, and what it saw; the knobs are set by the tests."""

    payload: bytes = b""
    version: int = 0
    validators: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    body_bytes: int = 0
    cut_after: int | None = None  # cut the connection after N body bytes, on the next GET
    statuses: list[int] = field(default_factory=list)  # answered before serving normally
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_payload(self, payload: bytes) -> None:
        with self.lock:
            self.payload = payload
            self.version += 1

    @property
    def etag(self) -> str:
        return f'"v{self.version}-{hashlib.sha256(self.payload).hexdigest()[:12]}"'

    @property
    def last_modified(self) -> str:
        return formatdate(1_700_000_000 + 3600 * self.version, usegmt=True)

    def reset_counters(self) -> None:
        with self.lock:
            self.requests.clear()
            self.body_bytes = 0

    def gets(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "GET"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        state: ServerState = self.server.state
        with state.lock:
            state.requests.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers)}
            )
            override = state.statuses.pop(0) if state.statuses else None
            cut = None
            if not head and state.cut_after is not None and self.path == DATA_PATH:
                cut, state.cut_after = state.cut_after, None
            payload, etag, last_modified = state.payload, state.etag, state.last_modified
            validators = state.validators

        if self.path.startswith("/redirect/"):
            self._simple(302, {"Location": "/data/" + self.path.removeprefix("/redirect/")})
            return
        if override is not None:
            self._simple(override)
            return
        if self.path != DATA_PATH:
            self._simple(404)
            return

        headers = {"Accept-Ranges": "bytes"}
        if validators:
            headers |= {"ETag": etag, "Last-Modified": last_modified}
            if_none_match = self.headers.get("If-None-Match")
            if_modified_since = self.headers.get("If-Modified-Since")
            if if_none_match is not None:
                not_modified = if_none_match == etag
            elif if_modified_since is not None:
                since = parsedate_to_datetime(if_modified_since)
                not_modified = parsedate_to_datetime(last_modified) <= since
            else:
                not_modified = False
            if not_modified:
                self.send_response(304)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                return

        status, start, end = 200, 0, len(payload)
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        range_applies = if_range is None or (validators and if_range in (etag, last_modified))
        if range_header and range_applies:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header)
            assert match, range_header
            start = int(match[1])
            if start >= len(payload):
                self._simple(416, {"Content-Range": f"bytes */{len(payload)}"})
                return
            end = min(int(match[2]) + 1, len(payload)) if match[2] else len(payload)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(payload)}"

        body = payload[start:end]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        to_send = body if cut is None else body[:cut]
        try:
            for i in range(0, len(to_send), 64 * 1024):
                chunk = to_send[i : i + 64 * 1024]
                self.wfile.write(chunk)
                with state.lock:
                    state.body_bytes += len(chunk)
        except OSError:  # the client went away
            self.close_connection = True
            return
        if cut is not None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _simple(self, status: int, extra: dict[str, str] | None = None) -> None:
        body = f"status {status}\n".encode()
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The client closes keep-alive connections (with unread error bodies) by reset: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Server:
    state: ServerState
    port: int

    def url(self, path: str = DATA_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    state = ServerState()
    state.set_payload(os.urandom(PAYLOAD_SIZE))
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield Server(state, httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name or p.suffix == ".tmp")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_plain_download_writes_file_and_metadata(server: Server, tmp_path: Path, capsys) -> None:
    path = download_url(server.url(), tmp_path / "dl")

    assert path == tmp_path / "dl" / "fer.zip"
    assert path.read_bytes() == server.state.payload
    meta = json.loads((tmp_path / "dl" / "fer.zip.meta.json").read_text())
    assert meta["url"] == server.url()
    assert meta["etag"] == server.state.etag
    assert meta["last_modified"] == server.state.last_modified
    assert meta["size"] == PAYLOAD_SIZE
    assert meta["sha256"] == sha256(server.state.payload)
    assert meta["downloaded_at"]
    assert leftovers(tmp_path / "dl") == []
    assert len(server.state.requests) == 1
    assert "fer.zip" in capsys.readouterr().err  # the progress bar


def test_progress_disabled(server: Server, tmp_path: Path, capsys) -> None:
    path = download_url(server.url(), tmp_path, progress=False)

    assert path.read_bytes() == server.state.payload
    assert capsys.readouterr().err == ""


def test_interruption_mid_body_resumes_with_range(server: Server, tmp_path: Path) -> None:
    server.state.cut_after = 1_000_000

    path = download_url(server.url(), tmp_path, progress=False)

    assert path.read_bytes() == server.state.payload
    first, second = server.state.gets()
    assert "range" not in {k.lower() for k in first["headers"]}
    assert second["headers"]["Range"] == "bytes=1000000-"
    assert second["headers"]["If-Range"] == server.state.etag
    assert server.state.body_bytes == PAYLOAD_SIZE  # resumed, not restarted
    assert server.state.body_bytes < 2 * PAYLOAD_SIZE
    assert leftovers(tmp_path) == []


def test_leftover_part_from_an_earlier_process_is_resumed(server: Server, tmp_path: Path) -> None:
    server.state.cut_after = 1_500_000
    with pytest.raises(DatasetError, match="partial download is kept"):
        download_url(server.url(), tmp_path, progress=False, attempts=1)
    assert (tmp_path / "fer.zip.part").stat().st_size == 1_500_000
    assert not (tmp_path / "fer.zip").exists()

    path = download_url(server.url(), tmp_path, progress=False)

    assert path.read_bytes() == server.state.payload
    assert server.state.gets()[-1]["headers"]["Range"] == "bytes=1500000-"
    assert server.state.body_bytes < 2 * PAYLOAD_SIZE
    assert leftovers(tmp_path) == []


def test_complete_leftover_part_is_finished_without_a_body(server: Server, tmp_path: Path) -> None:
    (tmp_path / "fer.zip.part").write_bytes(server.state.payload)
    (tmp_path / "fer.zip.part.json").write_text(
        json.dumps({"url": server.url(), "etag": server.state.etag, "last_modified": None})
    )

    path = download_url(server.url(), tmp_path, progress=False)

    assert path.read_bytes() == server.state.payload
    assert server.state.body_bytes == 0
    assert leftovers(tmp_path) == []


def test_changed_source_between_attempts_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    server.state.cut_after = 1_000_000
    with pytest.raises(DatasetError):
        download_url(server.url(), tmp_path, progress=False, attempts=1)
    server.state.set_payload(os.urandom(PAYLOAD_SIZE - 1000))

    path = download_url(server.url(), tmp_path, progress=False)

    assert path.read_bytes() == server.state.payload  # not spliced with the old bytes
    last = server.state.gets()[-1]
    assert last["headers"]["Range"] == "bytes=1000000-"  # asked to resume, got a full 200
    assert json.loads((tmp_path / "fer.zip.meta.json").read_text())["etag"] == server.state.etag
    assert leftovers(tmp_path) == []


def test_unchanged_source_is_revalidated_with_304(server: Server, tmp_path: Path) -> None:
    first = download_url(server.url(), tmp_path, progress=False)
    server.state.reset_counters()

    second = download_url(server.url(), tmp_path, progress=False)

    assert second == first and second.read_bytes() == server.state.payload
    (request,) = server.state.requests
    assert request["headers"]["If-None-Match"] == server.state.etag
    assert server.state.body_bytes == 0


def test_pinned_sha256_cache_hit_makes_no_request(server: Server, tmp_path: Path) -> None:
    digest = sha256(server.state.payload)
    download_url(server.url(), tmp_path, digest, progress=False)
    server.state.reset_counters()

    path = download_url(f"{server.url()}#sha256={digest.upper()}", tmp_path, progress=False)

    assert path.read_bytes() == server.state.payload
    assert server.state.requests == []


def test_changed_source_is_downloaded_again(server: Server, tmp_path: Path) -> None:
    download_url(server.url(), tmp_path, progress=False)
    server.state.set_payload(os.urandom(PAYLOAD_SIZE))
    server.state.reset_counters()

    path = download_url(server.url(), tmp_path, progress=False)

    assert path.read_bytes() == server.state.payload
    assert len(server.state.requests) == 1  # the conditional GET carried the new body
    meta = json.loads((tmp_path / "fer.zip.meta.json").read_text())
    assert meta["etag"] == server.state.etag and meta["sha256"] == sha256(server.state.payload)
    assert leftovers(tmp_path) == []


def test_server_without_validators_is_checked_by_size(server: Server, tmp_path: Path) -> None:
    server.state.validators = False
    download_url(server.url(), tmp_path, progress=False)
    server.state.reset_counters()

    download_url(server.url(), tmp_path, progress=False)
    assert [r["method"] for r in server.state.requests] == ["HEAD"]

    server.state.set_payload(os.urandom(PAYLOAD_SIZE + 10))
    server.state.reset_counters()
    path = download_url(server.url(), tmp_path, progress=False)
    assert [r["method"] for r in server.state.requests] == ["HEAD", "GET"]
    assert path.read_bytes() == server.state.payload


def test_sha256_mismatch_discards_the_download(server: Server, tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(DatasetError) as error:
        download_url(server.url(), tmp_path, wrong, progress=False)

    message = str(error.value)
    assert server.url() in message and "does not match the expected sha256" in message
    assert "#sha256=" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("status", "hint"),
    [(404, "check the URL in FER_DATASET"), (403, "refused access")],
)
def test_client_errors_fail_at_once(server: Server, tmp_path: Path, status: int, hint: str) -> None:
    server.state.statuses = [status] * 5
    with pytest.raises(DatasetError) as error:
        download_url(server.url(), tmp_path, progress=False)

    assert server.url() in str(error.value) and hint in str(error.value)
    assert len(server.state.requests) == 1


def test_unknown_path_is_not_found(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        download_url(server.url("/data/missing.zip"), tmp_path, progress=False)


def test_server_error_is_retried(server: Server, tmp_path: Path) -> None:
    server.state.statuses = [500]

    path = download_url(server.url(), tmp_path, progress=False)

    assert path.read_bytes() == server.state.payload
    assert len(server.state.requests) == 2


def test_persistent_server_error_gives_up(server: Server, tmp_path: Path) -> None:
    server.state.statuses = [503] * 3
    with pytest.raises(DatasetError, match="HTTP 503 on all 3 attempts"):
        download_url(server.url(), tmp_path, progress=False, attempts=3)
    assert len(server.state.requests) == 3


def test_cached_copy_is_used_when_revalidation_fails(server: Server, tmp_path: Path) -> None:
    download_url(server.url(), tmp_path, progress=False)
    server.state.statuses = [500, 500]

    path = download_url(server.url(), tmp_path, progress=False, attempts=2)

    assert path.read_bytes() == server.state.payload


def test_connection_refused_says_host_unreachable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the download starts

    with pytest.raises(DatasetError, match="cannot reach host 127.0.0.1") as error:
        download_url(f"http://127.0.0.1:{port}/fer.zip", tmp_path, progress=False, attempts=2)
    assert "FER_DATASET" in str(error.value)


@pytest.mark.parametrize("url", ["ftp://example.org/fer.zip", "file:///tmp/fer.zip", "fer.zip"])
def test_non_http_scheme_is_rejected(url: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="only http:// and https://"):
        download_url(url, tmp_path)


def test_redirect_is_followed(server: Server, tmp_path: Path) -> None:
    path = download_url(server.url("/redirect/fer.zip"), tmp_path, progress=False)

    assert path.name == "fer.zip" and path.read_bytes() == server.state.payload
    assert [r["path"] for r in server.state.requests] == ["/redirect/fer.zip", DATA_PATH]


def test_split_sha256_fragment() -> None:
    digest = "AB" * 32
    assert split_sha256_fragment(f"https://h/x.zip#sha256={digest}") == (
        "https://h/x.zip",
        digest.lower(),
    )
    assert split_sha256_fragment("https://h/x.zip") == ("https://h/x.zip", None)


@pytest.mark.parametrize(
    "fragment", ["sha256=abc", "sha256=" + "g" * 64, "md5=" + "a" * 32, "sha256"]
)
def test_split_sha256_fragment_rejects_malformed_pins(fragment: str) -> None:
    with pytest.raises(DatasetError, match="#sha256=<64 hex digits>"):
        split_sha256_fragment(f"https://h/x.zip#{fragment}")
