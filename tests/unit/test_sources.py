from __future__ import annotations

from pathlib import Path

import pytest

from model.errors import DatasetError
from model.sources import acquire_dataset
from tests.unit.helpers import write_fer_tree

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "source", ["kaggle://msambare/fer2013", "https://example.org/fer.zip", "s3://b/fer/"]
)
def test_remote_sources_say_what_to_do(source: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        acquire_dataset(source, tmp_path)
    assert "not supported yet" in str(error.value) and "FER_DATASET" in str(error.value)


def test_archive_file_is_rejected_clearly(tmp_path: Path) -> None:
    archive = tmp_path / "fer.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(DatasetError, match="extract it"):
        acquire_dataset(str(archive), tmp_path / "home")


def test_local_folder_and_file_uri_give_the_same_dataset(tmp_path: Path) -> None:
    root = write_fer_tree(tmp_path / "fer", per_class=1)
    by_path = acquire_dataset(str(root), tmp_path / "home")
    by_uri = acquire_dataset(root.as_uri(), tmp_path / "home")
    assert by_path.fingerprint == by_uri.fingerprint
    assert by_path.root == root.resolve()
