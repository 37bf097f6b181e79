"""Dataset sources: turn the ``FER_DATASET`` value into a local, indexed dataset."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from model.dataset import DatasetRef, find_layout_root, index_dataset
from model.errors import DatasetError

logger = logging.getLogger(__name__)

_REMOTE_SCHEMES = frozenset({"kaggle", "http", "https", "s3"})


def acquire_dataset(source: str, home: Path) -> DatasetRef:
    """Make the dataset named by ``source`` available locally and index it.

    Only local folders are supported so far; remote schemes get an error that says so.

    Args:
        source: a local folder in FER layout (possibly nested one level), or a URI.
        home: platform home, where manifests and caches live.

    Returns:
        A fingerprinted reference to the local copy.

    Raises:
        DatasetError: if the source is unsupported, missing or not in FER layout.
    """
    scheme = urlparse(source).scheme.lower()
    if scheme in _REMOTE_SCHEMES:
        raise DatasetError(
            f"dataset source {source!r}: {scheme}:// sources are not supported yet; "
            "download FER2013 (Kaggle msambare/fer2013) and set FER_DATASET to the local folder "
            "that holds train/ and test/"
        )
    if scheme == "file":
        source_path = Path(urlparse(source).path)
    else:
        source_path = Path(source)
    folder = source_path.expanduser().resolve()
    if folder.is_file():
        raise DatasetError(
            f"dataset source {folder} is a file; archives are not supported yet: "
            "extract it and set FER_DATASET to the folder that holds train/ and test/"
        )
    root = find_layout_root(folder)
    return index_dataset(root, home, source)
