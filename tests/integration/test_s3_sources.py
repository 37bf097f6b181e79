"""s3:// dataset sources and `fer data push|info` against the real SeaweedFS store."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli import app
from model.data.dataset import compute_fingerprint
from model.data.sources import acquire_dataset, fetch_source, parse_source, push_dataset
from model.errors import DatasetError
from model.s3 import make_s3_client
from model.settings import Settings
from tests.unit.helpers import scan

pytestmark = pytest.mark.integration

BUCKET = "fer-datasets"


class CountingClient:
    """The real boto3 client, counting object downloads (to prove what the cache saved)."""

    def __init__(self, client: Any) -> None:
        self._client, self.downloads = client, 0

    def download_file(self, *args: Any, **kwargs: Any) -> None:
        self.downloads += 1
        self._client.download_file(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture(scope="module")
def pushed(services: Settings, fer_subset: Path) -> str:
    """The real subset pushed once with `fer data push`."""
    result = CliRunner().invoke(app, ["data", "push", str(fer_subset), f"s3://{BUCKET}/subset"])
    assert result.exit_code == 0, result.output
    assert "pushed 280 files" in result.output
    return f"s3://{BUCKET}/subset/"


def test_s3_prefix_gives_the_same_dataset_and_syncs_only_changes(
    services: Settings, fer_subset: Path, pushed: str
) -> None:
    expected = compute_fingerprint(scan(fer_subset))
    assert acquire_dataset(pushed, services).fingerprint == expected
    counting = CountingClient(make_s3_client(services))
    fetch_source(parse_source(pushed), services, lambda _: counting)
    assert counting.downloads == 0  # unchanged: listing only
    client = make_s3_client(services)
    key = "subset/test/happy/" + sorted((fer_subset / "test" / "happy").iterdir())[0].name
    client.put_object(
        Bucket=BUCKET, Key=key, Body=(fer_subset / "test/sad").iterdir().__next__().read_bytes()
    )
    fetch_source(parse_source(pushed), services, lambda _: counting)
    assert counting.downloads == 1
    assert acquire_dataset(pushed, services).fingerprint != expected
    assert push_dataset(fer_subset, BUCKET, "subset", client) == 1  # restores just that file


def test_s3_archive_is_downloaded_once(
    services: Settings, fer_subset: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "fer.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(fer_subset.rglob("*.jpg")):
            bundle.write(path, "fer2013/" + path.relative_to(fer_subset).as_posix())
    client = make_s3_client(services)
    client.create_bucket(Bucket="fer-archives")
    client.upload_file(str(archive), "fer-archives", "fer.zip")
    source = "s3://fer-archives/fer.zip"
    ref = acquire_dataset(source, services)
    assert ref.fingerprint == compute_fingerprint(scan(fer_subset))
    counting = CountingClient(client)
    fetch_source(parse_source(source), services, lambda _: counting)
    assert counting.downloads == 0


def test_missing_s3_prefix_is_a_clear_error(services: Settings) -> None:
    with pytest.raises(DatasetError, match="holds no objects"):
        acquire_dataset(f"s3://{BUCKET}/nothing-here/", services)


def test_data_info_prints_counts_and_fingerprint(
    services: Settings, pushed: str, fer_subset: Path
) -> None:
    result = CliRunner().invoke(app, ["data", "info", pushed])
    assert result.exit_code == 0, result.output
    assert "happy" in result.output and "      30      10" in result.output
    assert compute_fingerprint(scan(fer_subset)) in result.output


def test_push_to_a_non_s3_destination_is_refused(fer_subset: Path) -> None:
    result = CliRunner().invoke(app, ["data", "push", str(fer_subset), "/tmp/elsewhere"])
    assert result.exit_code == 1 and "s3://<bucket>/<prefix>" in result.output
