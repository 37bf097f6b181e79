from __future__ import annotations

import http.server
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.data.sources import acquire_dataset, parse_source
from model.errors import DatasetError
from model.settings import Settings
from tests.unit.helpers import write_fer_tree

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def fer_tree(tmp_path: Path) -> Path:
    return write_fer_tree(tmp_path / "src" / "archive", per_class=1)


def _zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            bundle.write(path, path.relative_to(folder.parent).as_posix())
    return archive


@pytest.mark.parametrize(
    ("source", "kind", "location"),
    [
        ("kaggle://msambare/fer2013", "kaggle", "msambare/fer2013"),
        ("https://example.org/fer.zip", "http", "https://example.org/fer.zip"),
        ("s3://bucket/fer/", "s3", "bucket/fer/"),
        ("s3://bucket/fer.zip", "s3", "bucket/fer.zip"),
        ("/data/fer2013", "local", "/data/fer2013"),
        ("file:///data/fer%202013", "local", "/data/fer 2013"),
    ],
)
def test_sources_are_classified(source: str, kind: str, location: str) -> None:
    parsed = parse_source(source)
    assert (parsed.kind, parsed.location) == (kind, location)


def test_pinned_http_source_keeps_its_hash() -> None:
    parsed = parse_source("https://example.org/fer.zip#sha256=" + "ab" * 32)
    assert parsed.sha256 == "ab" * 32 and parsed.location == "https://example.org/fer.zip"


@pytest.mark.parametrize("source", ["", "ftp://example.org/fer.zip", "kaggle://fer2013", "s3:///x"])
def test_bad_sources_say_what_is_expected(source: str) -> None:
    with pytest.raises(DatasetError):
        parse_source(source)


def test_local_folder_and_file_uri_give_the_same_dataset(
    fer_tree: Path, settings: Settings
) -> None:
    by_path = acquire_dataset(str(fer_tree), settings)
    by_uri = acquire_dataset(fer_tree.as_uri(), settings)
    assert by_path.fingerprint == by_uri.fingerprint
    assert by_path.root == fer_tree.resolve()


def test_zip_and_tar_gz_give_the_same_dataset_as_the_folder(
    fer_tree: Path, settings: Settings, tmp_path: Path
) -> None:
    folder = acquire_dataset(str(fer_tree), settings)
    archive = _zip_folder(fer_tree, tmp_path / "fer2013.zip")
    tarball = tmp_path / "fer2013.tar.gz"
    with tarfile.open(tarball, "w:gz") as bundle:
        bundle.add(fer_tree, arcname="archive")
    from_zip = acquire_dataset(str(archive), settings)
    from_tar = acquire_dataset(str(tarball), settings)
    assert from_zip.fingerprint == from_tar.fingerprint == folder.fingerprint
    assert from_zip.root.name == "archive"  # nested one level, found
    extracted = list((settings.home_dir / "extracted").iterdir())
    assert len(extracted) == 2
    # A second acquire of the same archive extracts nothing.
    marker = from_zip.root / "marker"
    marker.write_text("kept")
    assert acquire_dataset(str(archive), settings).root == from_zip.root and marker.exists()


def test_unsafe_archive_is_refused(tmp_path: Path, settings: Settings) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../escape.txt", "x")
    with pytest.raises(DatasetError, match="escape"):
        acquire_dataset(str(archive), settings)
    assert not (tmp_path / "escape.txt").exists()


def test_plain_file_is_refused_clearly(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("x")
    with pytest.raises(DatasetError, match="not a .zip"):
        acquire_dataset(str(path), settings)


def test_missing_path_names_the_setting(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(DatasetError, match="FER_DATASET"):
        acquire_dataset(str(tmp_path / "nowhere"), settings)


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[tuple[str, int]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        type(self).requests.append((self.command, code))
        super().send_response(code, message)


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    served = tmp_path / "served"
    served.mkdir()
    _CountingHandler.requests = []
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _CountingHandler(*a, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_http_archive_is_downloaded_once(
    fer_tree: Path, settings: Settings, http_root: tuple[Path, str]
) -> None:
    served, base = http_root
    _zip_folder(fer_tree, served / "fer2013.zip")
    first = acquire_dataset(f"{base}/fer2013.zip", settings)
    assert ("GET", 200) in _CountingHandler.requests
    _CountingHandler.requests.clear()
    second = acquire_dataset(f"{base}/fer2013.zip", settings)
    assert second.fingerprint == first.fingerprint
    assert ("GET", 200) not in _CountingHandler.requests  # revalidated, nothing downloaded


def test_http_archive_with_wrong_hash_is_discarded(
    fer_tree: Path, settings: Settings, http_root: tuple[Path, str]
) -> None:
    served, base = http_root
    _zip_folder(fer_tree, served / "fer2013.zip")
    with pytest.raises(DatasetError, match="sha256"):
        acquire_dataset(f"{base}/fer2013.zip#sha256={'0' * 64}", settings)
    assert not list((settings.home_dir / "downloads").rglob("fer2013.zip"))
    assert not (settings.home_dir / "extracted").exists()
