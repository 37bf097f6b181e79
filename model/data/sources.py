"""Dataset sources: turn the ``FER_DATASET`` value into a local, indexed dataset.

Supported sources (one URI-style string):

* ``kaggle://<owner>/<dataset>`` — through ``kagglehub`` (public datasets need no account);
* ``http(s)://…/archive.zip`` — streamed, resumable, optionally pinned with ``#sha256=<hex>``;
* ``s3://bucket/prefix/`` (a folder) and ``s3://bucket/key.zip`` (an archive) — through boto3,
  on the configured S3 endpoint;
* a local folder, ``.zip``, ``.tar`` or ``.tar.gz`` (also as ``file://`` URI).

Everything fetched lands under ``<home>/downloads`` keyed by source, and archives are extracted
once under ``<home>/extracted`` keyed by their content hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from model.contract import DatasetRef
from model.data.archives import extract_archive, is_archive
from model.data.dataset import find_layout_root, index_dataset
from model.data.download import download_url, split_sha256_fragment
from model.errors import DatasetError
from model.files import sha256_file
from model.s3 import S3Client, make_s3_client, s3_error_code
from model.settings import ArchiveLimits, Settings

logger = logging.getLogger(__name__)

_KAGGLE_HANDLE = re.compile(r"^[\w.-]+/[\w.-]+(/versions/\d+)?$")


@dataclass(frozen=True)
class ParsedSource:
    """A dataset source, classified.

    Attributes:
        kind: ``kaggle``, ``http``, ``s3`` or ``local``.
        location: Kaggle handle, URL (without fragment), ``bucket/key`` or local path.
        sha256: expected archive hash for HTTP sources pinned with ``#sha256=``.
    """

    kind: str
    location: str
    sha256: str | None = None


def parse_source(source: str) -> ParsedSource:
    """Classify a ``FER_DATASET`` value.

    Args:
        source: the setting's value.

    Returns:
        The parsed source.

    Raises:
        DatasetError: if the value is empty, malformed or uses an unknown scheme.
    """
    if not source.strip():
        raise DatasetError("FER_DATASET is empty; set it to a folder, archive, URL or kaggle:// id")
    parsed = urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme == "kaggle":
        handle = f"{parsed.netloc}{parsed.path}".strip("/")
        if not _KAGGLE_HANDLE.match(handle):
            raise DatasetError(
                f"dataset source {source!r}: expected kaggle://<owner>/<dataset>, "
                "e.g. kaggle://msambare/fer2013"
            )
        return ParsedSource("kaggle", handle)
    if scheme in ("http", "https"):
        url, sha256 = split_sha256_fragment(source)
        return ParsedSource("http", url, sha256)
    if scheme == "s3":
        if not parsed.netloc:
            raise DatasetError(f"dataset source {source!r}: expected s3://<bucket>/<prefix or key>")
        return ParsedSource("s3", f"{parsed.netloc}/{parsed.path.lstrip('/')}")
    if scheme == "file":
        return ParsedSource("local", unquote(parsed.path))
    if len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise DatasetError(
            f"dataset source {source!r}: unknown scheme {scheme}://; use a local path, "
            "kaggle://, http(s)://, s3:// or file://"
        )
    return ParsedSource("local", source)


def _source_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _archive_digest(path: Path) -> str:
    """The archive's sha256, from the download's metadata when it recorded one."""
    meta = path.with_name(path.name + ".meta.json")
    if meta.exists():
        recorded = json.loads(meta.read_text()).get("sha256")
        if recorded:
            return str(recorded)
    return sha256_file(path)


def _materialise(path: Path, home: Path, limits: ArchiveLimits) -> Path:
    """A local folder for ``path``: the folder itself, or the archive extracted once."""
    if path.is_dir():
        return path
    if not path.exists():
        raise DatasetError(
            f"dataset source {path} does not exist; set FER_DATASET to a folder or archive "
            "in FER layout (train/<class>/*.jpg, test/<class>/*.jpg)"
        )
    if not is_archive(path):
        raise DatasetError(
            f"dataset source {path} is a file but not a .zip, .tar or .tar.gz archive; "
            "point FER_DATASET at the archive or at the extracted folder"
        )
    target = home / "extracted" / _archive_digest(path)[:32]
    return extract_archive(path, target, limits)


# --- Kaggle -----------------------------------------------------------------------------------


def fetch_kaggle(handle: str, home: Path) -> Path:
    """Download a Kaggle dataset with ``kagglehub`` into ``<home>/downloads/kaggle``.

    Public datasets need no account; credentials come from ``KAGGLE_USERNAME``/``KAGGLE_KEY``
    or ``~/.kaggle/kaggle.json`` when a dataset needs them. ``KAGGLE_API_ENDPOINT`` points
    kagglehub at another server (tests use a local stand-in).

    Args:
        handle: ``<owner>/<dataset>`` (optionally ``/versions/<n>``).
        home: platform home.

    Returns:
        The local folder kagglehub extracted the dataset to
        (``<home>/downloads/kaggle/<handle>``).

    Raises:
        DatasetError: on authentication, not-found or network failures, saying what to do.
    """
    import kagglehub

    target = home / "downloads" / "kaggle" / handle
    try:
        return Path(kagglehub.dataset_download(handle, output_dir=str(target)))
    except Exception as error:  # kagglehub raises requests/its own errors; all mean the same
        raise DatasetError(_explain_kaggle_error(handle, error)) from error


def _explain_kaggle_error(handle: str, error: Exception) -> str:
    text = f"{type(error).__name__}: {error}"
    if any(code in text for code in ("401", "403", "Unauthorized", "Forbidden")):
        what = (
            "Kaggle refused access: set KAGGLE_USERNAME and KAGGLE_KEY (or ~/.kaggle/kaggle.json) "
            "to an account that accepted the dataset's terms"
        )
    elif "404" in text or "NotFound" in text:
        what = "Kaggle has no such dataset: check the kaggle://<owner>/<dataset> id"
    else:
        what = "Kaggle could not be reached"
    return (
        f"cannot download kaggle://{handle} ({text}); {what}, or point FER_DATASET at a "
        "local folder/archive, an http(s):// archive or an s3:// copy"
    )


# --- S3 ---------------------------------------------------------------------------------------


def _s3_error(uri: str, error: Exception) -> DatasetError:
    return DatasetError(
        f"cannot read {uri}: {error}; check the bucket and key, and that FER_S3_ENDPOINT_URL "
        "and the FER_S3_* credentials give access to it"
    )


def fetch_s3_object(client: S3Client, bucket: str, key: str, dest_dir: Path) -> Path:
    """Download one object (an archive) unless the cached copy has the same ETag.

    Args:
        client: boto3 S3 client.
        bucket: bucket name.
        key: object key.
        dest_dir: cache folder for this source.

    Returns:
        The local file.

    Raises:
        DatasetError: if the object cannot be read.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    uri = f"s3://{bucket}/{key}"
    target = dest_dir / Path(key).name
    meta_path = target.with_name(target.name + ".meta.json")
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        if target.exists() and meta_path.exists():
            if json.loads(meta_path.read_text()).get("etag") == head["ETag"]:
                logger.info("%s unchanged (ETag %s); using the cached copy", uri, head["ETag"])
                return target
        dest_dir.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        client.download_file(bucket, key, str(part))
    except (ClientError, BotoCoreError) as error:
        raise _s3_error(uri, error) from error
    if part.stat().st_size != head["ContentLength"]:
        part.unlink()
        raise DatasetError(f"{uri}: downloaded size differs from the object's; try again")
    digest = sha256_file(part)
    os.replace(part, target)
    meta_path.write_text(json.dumps({"uri": uri, "etag": head["ETag"], "sha256": digest}))
    return target


def sync_s3_prefix(
    client: S3Client, bucket: str, prefix: str, dest_dir: Path, workers: int = 16
) -> tuple[Path, int]:
    """Mirror every object under a prefix into ``dest_dir``, fetching only what changed.

    Args:
        client: boto3 S3 client.
        bucket: bucket name.
        prefix: key prefix (a "folder"), with or without trailing slash.
        dest_dir: local mirror for this source.
        workers: parallel downloads (each object is small).

    Returns:
        The mirror folder and how many objects were downloaded.

    Raises:
        DatasetError: if the prefix is empty or cannot be read.
    """
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    uri = f"s3://{bucket}/{prefix}"
    index_path = dest_dir.with_name(dest_dir.name + ".index.json")
    known: dict[str, str] = json.loads(index_path.read_text()) if index_path.exists() else {}
    listing = _list_prefix_etags(client, bucket, prefix, uri)
    _check_mirror_listing(uri, listing)
    stale = [
        r for r, etag in listing.items() if known.get(r) != etag or not (dest_dir / r).exists()
    ]
    _download_into_mirror(client, bucket, prefix, stale, dest_dir, workers, uri)
    for relative in set(known) - set(listing):  # removed from the store: remove locally too
        (dest_dir / relative).unlink(missing_ok=True)
    index_path.write_text(json.dumps(listing))
    logger.info("%s: %d objects, %d downloaded", uri, len(listing), len(stale))
    return dest_dir, len(stale)


def _list_prefix_etags(client: S3Client, bucket: str, prefix: str, uri: str) -> dict[str, str]:
    """List the objects under a prefix with their ETags, folder markers left out.

    Args:
        client: boto3 S3 client.
        bucket: bucket name.
        prefix: normalised key prefix (empty or ending in ``/``).
        uri: ``s3://bucket/prefix``, for the error message.

    Returns:
        ETag by key relative to the prefix.

    Raises:
        DatasetError: if the listing fails.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return {
            item["Key"][len(prefix) :]: item["ETag"]
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for item in page.get("Contents", [])
            if not item["Key"].endswith("/")
        }
    except (ClientError, BotoCoreError) as error:
        raise _s3_error(uri, error) from error


def _check_mirror_listing(uri: str, listing: dict[str, str]) -> None:
    """Refuse an empty prefix and keys that would land outside the local mirror.

    Args:
        uri: ``s3://bucket/prefix``, for the error messages.
        listing: ETag by key relative to the prefix.

    Raises:
        DatasetError: if the listing is empty or a key is absolute or contains ``..``.
    """
    if not listing:
        raise DatasetError(f"{uri} holds no objects; check the bucket and prefix in FER_DATASET")
    for relative in listing:
        if relative.startswith("/") or ".." in Path(relative).parts:
            raise DatasetError(f"{uri}: object key {relative!r} would escape the local mirror")


def _download_into_mirror(
    client: S3Client,
    bucket: str,
    prefix: str,
    relatives: list[str],
    dest_dir: Path,
    workers: int,
    uri: str,
) -> None:
    """Download objects into the mirror in parallel, each through a ``.part`` file.

    Args:
        client: boto3 S3 client.
        bucket: bucket name.
        prefix: normalised key prefix the relative keys are under.
        relatives: keys relative to the prefix, each also its path inside ``dest_dir``.
        dest_dir: the local mirror.
        workers: parallel downloads.
        uri: ``s3://bucket/prefix``, for the error message.

    Raises:
        DatasetError: if a download fails.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    def fetch(relative: str) -> None:
        target = dest_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        # A rename after the whole object arrived: an interrupted sync leaves no torn file.
        part = target.with_name(target.name + ".part")
        client.download_file(bucket, prefix + relative, str(part))
        os.replace(part, target)

    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fetch, relatives))
    except (ClientError, BotoCoreError) as error:
        raise _s3_error(uri, error) from error


# --- acquire ----------------------------------------------------------------------------------


def fetch_source(
    parsed: ParsedSource,
    settings: Settings,
    s3_client_factory: Callable[[Settings], Any] = make_s3_client,
) -> Path:
    """Bring a source to local disk (a folder or an archive), using the download cache.

    Args:
        parsed: the source.
        settings: platform settings (home, S3 endpoint and credentials).
        s3_client_factory: builds the S3 client (the default uses the settings).

    Returns:
        A local folder or archive file.
    """
    downloads = settings.home_dir / "downloads"
    if parsed.kind == "kaggle":
        return fetch_kaggle(parsed.location, settings.home_dir)
    if parsed.kind == "http":
        return download_url(
            parsed.location, downloads / "http" / _source_key(parsed.location), parsed.sha256
        )
    if parsed.kind == "s3":
        bucket, _, key = parsed.location.partition("/")
        client = s3_client_factory(settings)
        dest = downloads / "s3" / _source_key(parsed.location)
        if key and is_archive(Path(key)):
            return fetch_s3_object(client, bucket, key, dest)
        return sync_s3_prefix(client, bucket, key, dest / "data")[0]
    return Path(parsed.location).expanduser().resolve()


def acquire_dataset(source: str, settings: Settings) -> DatasetRef:
    """Make the dataset named by ``source`` available locally and index it.

    Args:
        source: a ``FER_DATASET`` value (see the module docstring).
        settings: platform settings.

    Returns:
        A fingerprinted reference to the local copy.

    Raises:
        DatasetError: if the source is unsupported, unreachable, unsafe or not in FER layout.
    """
    parsed = parse_source(source)
    local = fetch_source(parsed, settings)
    folder = _materialise(local, settings.home_dir, settings.archive_limits)
    root = find_layout_root(folder)
    return index_dataset(root, settings.home_dir, source)


def push_dataset(root: Path, bucket: str, prefix: str, client: S3Client, workers: int = 16) -> int:
    """Upload a FER-layout folder's files to ``s3://bucket/prefix/``, skipping identical ones.

    Args:
        root: the layout root (holds ``train/`` and ``test/``).
        bucket: destination bucket.
        prefix: destination prefix.
        client: boto3 S3 client.
        workers: parallel uploads.

    Returns:
        How many files were uploaded.

    Raises:
        DatasetError: if the upload fails.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    prefix = prefix.strip("/")
    base = f"{prefix}/" if prefix else ""
    try:
        existing = {
            item["Key"][len(base) :]: item["ETag"].strip('"')
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base)
            for item in page.get("Contents", [])
        }
    except ClientError as error:
        if s3_error_code(error) != "NoSuchBucket":
            raise _s3_error(f"s3://{bucket}/{base}", error) from error
        client.create_bucket(Bucket=bucket)
        existing = {}
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    # A single-part upload's ETag is the MD5 of its bytes: equal means already there.
    todo = [
        p
        for p in files
        if existing.get(p.relative_to(root).as_posix())
        != hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()
    ]

    def upload(path: Path) -> None:
        client.upload_file(str(path), bucket, base + path.relative_to(root).as_posix())

    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(upload, todo))
    except (ClientError, BotoCoreError) as error:
        raise _s3_error(f"s3://{bucket}/{base}", error) from error
    logger.info("pushed %d of %d files to s3://%s/%s", len(todo), len(files), bucket, base)
    return len(todo)
