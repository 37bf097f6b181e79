"""Streamed, resumable, verified and cached HTTP(S) downloads.

:func:`download_url` fetches one file into a folder:

* streamed to ``<name>.part`` in 1 MiB chunks behind a progress bar, never held in memory;
* resumed after an interruption (in the same call or an earlier process) with ``Range`` and an
  ``If-Range`` validator recorded in ``<name>.part.json`` when the part was started, so a source
  that changed in between restarts cleanly instead of being spliced;
* retried on transport errors and 5xx answers (also 408 and 429) with exponential backoff; other
  4xx answers fail at once;
* verified (size against the announced length, optional sha256) before ``os.replace`` renames
  the part, so a partial or wrong download never looks complete;
* cached: ``<name>.meta.json`` records the validators; a later call returns the file without any
  request (pinned sha256 matches) or after one conditional GET (304 Not Modified).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from tqdm import tqdm

from model.errors import DatasetError
from model.files import sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

#: Bytes read from the network and written to disk per step.
CHUNK_SIZE = 1024 * 1024
#: Delay before the first retry, in seconds; it doubles per attempt up to ``MAX_BACKOFF_S``.
BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0

# 4xx answers that mean "try again later" rather than "this request is wrong".
_RETRYABLE_4XX = frozenset({408, 429})
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")
# Identity encoding keeps Content-Length, ranges and the stored bytes about the same thing.
_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "fer-platform-download/1"}


def split_sha256_fragment(url: str) -> tuple[str, str | None]:
    """Split an optional ``#sha256=<hex>`` pin off a URL.

    Args:
        url: a URL, e.g. ``https://host/fer.zip#sha256=<64 hex digits>``.

    Returns:
        The URL without its fragment and the lower-case hex digest, or ``None`` when the URL
        has no fragment.

    Raises:
        DatasetError: if the URL has a fragment that is not ``sha256=`` and 64 hex digits.
    """
    base, _, fragment = url.partition("#")
    if not fragment:
        return base, None
    key, equals, value = fragment.partition("=")
    if key.strip().lower() != "sha256" or not equals or not _SHA256_HEX.match(value.strip()):
        raise DatasetError(
            f"{url!r}: the URL fragment {fragment!r} is not a sha256 pin; "
            "write it as #sha256=<64 hex digits> or leave the fragment out"
        )
    return base, value.strip().lower()


def download_url(
    url: str,
    dest_dir: Path,
    expected_sha256: str | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
    attempts: int = 5,
) -> Path:
    """Download url into dest_dir/<file name from the URL path> and return that path.

    The body is streamed to ``<name>.part`` and renamed only once it is complete and verified;
    ``<name>.meta.json`` beside it records url, etag, last_modified, size, sha256 and
    downloaded_at. A file already there is returned without any request when ``expected_sha256``
    equals its actual sha256; otherwise one conditional GET revalidates it, or a HEAD size check
    when the server gave no validators (see :func:`_revalidation_headers`). If revalidation
    fails for network or server (5xx) reasons before any new content arrived, the cached file
    is returned with a warning, so a cached dataset works offline.

    Args:
        url: ``http://`` or ``https://`` URL; redirects are followed. A ``#sha256=<hex>``
            fragment is accepted as the pin.
        dest_dir: folder for the file and its metadata; created if missing.
        expected_sha256: hex sha256 the file must have.
        progress: show a progress bar on stderr.
        timeout: seconds allowed for connecting and between two reads.
        attempts: tries per download for transient failures (transport errors, 5xx, 408,
            429); each try resumes from the bytes already on disk.

    Returns:
        The path of the downloaded (or cached) file.

    Raises:
        DatasetError: if the URL is not HTTP(S), the server refuses or lacks the file, the
            host cannot be reached, or the download fails verification.
        ValueError: if ``attempts`` is less than 1.
    """
    url, expected = _validate_request(url, expected_sha256, attempts)
    paths = _Paths.for_url(url, Path(dest_dir))
    paths.final.parent.mkdir(parents=True, exist_ok=True)
    cached = paths.final.is_file()
    if cached and expected is not None:
        if _cached_copy_matches_pin(paths.final, expected):
            return paths.final
        cached = False  # not the wanted file: no revalidation, a fresh download
    fetched = _fetch(url, paths, cached, timeout=timeout, attempts=attempts, progress=progress)
    if fetched is None:  # the cached file is current, or the only copy within reach
        return paths.final
    return _finish(url, paths, fetched, expected)


def _validate_request(
    url: str, expected_sha256: str | None, attempts: int
) -> tuple[str, str | None]:
    """Check download_url's arguments and settle which sha256 the file must have.

    Args:
        url: the URL as given, possibly with a ``#sha256=`` fragment.
        expected_sha256: the sha256 passed as an argument, if any.
        attempts: the number of tries asked for.

    Returns:
        The URL without its fragment and the lower-case expected sha256 (from the argument or
        the fragment), or ``None`` when neither pins one.

    Raises:
        ValueError: if ``attempts`` is less than 1.
        DatasetError: if the URL is not HTTP(S), a sha256 is malformed, or the fragment and
            the argument name different digests.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DatasetError(
            f"{url!r}: only http:// and https:// URLs can be downloaded; "
            "use a local path for local files"
        )
    url, pinned = split_sha256_fragment(url)
    expected = _normalise_sha256(url, expected_sha256)
    if pinned and expected and pinned != expected:
        raise DatasetError(
            f"{url}: the #sha256= fragment ({pinned}) and the expected sha256 ({expected}) "
            "differ: keep one of them"
        )
    return url, expected or pinned


def _cached_copy_matches_pin(final: Path, expected: str) -> bool:
    """Whether the cached file already has the pinned sha256, so no request is needed.

    Args:
        final: the cached file.
        expected: the lower-case hex sha256 it must have.

    Returns:
        True (logged) when the digests match; False (with a warning that the file will be
        downloaded again) when they differ.
    """
    actual = sha256_file(final)
    if actual == expected:
        logger.info("using cached %s (sha256 matches the pin)", final)
        return True
    logger.warning(
        "cached %s has sha256 %s, not the expected %s; downloading it again",
        final,
        actual,
        expected,
    )
    return False


def _fetch(
    url: str, paths: _Paths, cached: bool, *, timeout: float, attempts: int, progress: bool
) -> _Fetched | None:
    """Revalidate the cached file if there is one, and transfer the body when it is needed.

    Args:
        url: the URL without fragment.
        paths: the files of this download.
        cached: whether a cached file exists that may be revalidated (not a pin mismatch).
        timeout: seconds allowed for connecting and between two reads.
        attempts: tries for transient failures.
        progress: show a progress bar on stderr.

    Returns:
        What the server said about the completed transfer, or ``None`` when the cached file
        is to be used as it is (current, not modified, or the server out of reach).

    Raises:
        DatasetError: if the transfer fails and no cached copy can stand in for it.
    """
    timeouts = httpx.Timeout(timeout)
    with httpx.Client(follow_redirects=True, timeout=timeouts, headers=_HEADERS) as client:
        conditional = _revalidation_headers(client, url, paths) if cached else {}
        if conditional is None:
            return None
        try:
            fetched = _transfer(client, url, paths, conditional, attempts, progress)
        except _Unreachable as error:
            # Nothing new arrived: the cached copy is the best there is (offline use).
            if conditional and not paths.part.exists():
                logger.warning("%s; using the cached copy %s", error, paths.final)
                return None
            raise
    if fetched is None:
        logger.info("%s is not modified; using cached %s", url, paths.final)
    return fetched


def _revalidation_headers(client: httpx.Client, url: str, paths: _Paths) -> dict[str, str] | None:
    """Decide how a cached file is revalidated before anything is downloaded.

    A leftover part of a newer version is resumed (no conditional headers). Otherwise any stale
    part is dropped and the validators in ``<name>.meta.json`` give ``If-None-Match`` /
    ``If-Modified-Since`` headers, so one conditional GET answers 304 (cached file current) or
    200 (the new version, in the same request). Without validators a HEAD request's
    ``Content-Length`` is compared with the cached size instead.

    Args:
        client: the HTTP client of this download.
        url: the URL without fragment.
        paths: the files of this download; ``paths.final`` exists.

    Returns:
        The headers for the GET (empty for an unconditional one), or ``None`` when the HEAD
        check already showed that the cached file can be used.
    """
    meta = _read_json(paths.meta)
    if meta.get("url") != url:
        meta = {}  # written for another source (or lost): no validators to trust
    if _part_is_newer_version(url, paths, meta):
        logger.info("resuming an interrupted update of %s", paths.final)
        return {}
    _discard_part(paths)  # a stale part of the cached version: not needed
    conditional = _conditional_headers(meta)
    if not conditional and _head_matches_cache(client, url, paths.final):
        return None
    return conditional


@dataclass(frozen=True)
class _Paths:
    """The files one download uses inside ``dest_dir``."""

    final: Path
    part: Path
    part_info: Path
    meta: Path

    @classmethod
    def for_url(cls, url: str, dest_dir: Path) -> _Paths:
        name = PurePosixPath(unquote(urlsplit(url).path)).name
        if name in ("", ".", ".."):
            name = "download"
        return cls(
            final=dest_dir / name,
            part=dest_dir / f"{name}.part",
            part_info=dest_dir / f"{name}.part.json",
            meta=dest_dir / f"{name}.meta.json",
        )


@dataclass(frozen=True)
class _Fetched:
    """What the server said about a completed transfer."""

    total: int | None
    etag: str | None
    last_modified: str | None


class _Unreachable(DatasetError):
    """Every attempt failed for transient reasons (network or 5xx)."""


class _RetryableStatus(Exception):
    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"HTTP {status}")


class _Restart(Exception):
    """The part on disk cannot be continued; it was discarded and the next try starts over."""


def _transfer(
    client: httpx.Client,
    url: str,
    paths: _Paths,
    conditional: dict[str, str],
    attempts: int,
    progress: bool,
) -> _Fetched | None:
    """Stream the body into the part file, resuming and retrying; ``None`` means 304."""
    last_error: Exception | None = None
    failures = restarts = 0
    back_off = False
    while failures < attempts:
        if back_off:
            time.sleep(min(BACKOFF_S * 2 ** (failures - 1), MAX_BACKOFF_S))
        back_off = False
        offset, if_range = _resume_point(url, paths)
        if offset and if_range:
            headers = {"Range": f"bytes={offset}-", "If-Range": if_range}
            logger.info("resuming %s at byte %d", url, offset)
        else:
            offset = 0
            headers = dict(conditional)
        try:
            with client.stream("GET", url, headers=headers) as response:
                return _receive(
                    response, url, paths, offset, bool(headers) and not offset, progress
                )
        except httpx.UnsupportedProtocol as error:
            raise DatasetError(
                f"{url}: {error}: only http:// and https:// are supported"
            ) from error
        except httpx.TooManyRedirects as error:
            raise DatasetError(
                f"{url}: too many redirects: check the URL in FER_DATASET"
            ) from error
        except (httpx.TransportError, _RetryableStatus) as error:
            last_error = error
            failures += 1
            back_off = True
            logger.warning("attempt %d/%d for %s failed: %s", failures, attempts, url, error)
        except _Restart as error:
            # The part was discarded, so the next request starts from byte 0 at once; the cap
            # only guards against a server that answers every range request inconsistently.
            restarts += 1
            if restarts > attempts:
                raise DatasetError(
                    f"{url}: the server keeps answering range requests inconsistently; "
                    "try again later or point FER_DATASET at a local copy"
                ) from error
    raise _unreachable(url, paths, last_error, attempts)


def _receive(
    response: httpx.Response,
    url: str,
    paths: _Paths,
    offset: int,
    conditional: bool,
    progress: bool,
) -> _Fetched | None:
    """Handle one response: check its status, then append or write its body to the part."""
    status = response.status_code
    info = _read_json(paths.part_info)
    if status == 304:
        if conditional:
            return None
        raise DatasetError(f"{url}: unexpected HTTP 304 to an unconditional request")
    if status == 416 and offset:
        return _part_already_complete(response, paths, offset, info)
    _raise_for_failed_status(url, status)
    if status == 206 and offset:
        fetched = _resume_part(response, url, paths, offset, info)
        mode = "ab"
    elif status == 200:
        if offset:
            logger.info("%s: the server sent the whole file (changed source); restarting", url)
        offset = 0
        fetched = _start_part(response, url, paths)
        mode = "wb"
    else:
        raise DatasetError(f"{url}: unexpected HTTP {status}: check the URL in FER_DATASET")
    _write_body(response, paths, mode, offset, fetched.total, progress)
    return fetched


def _part_already_complete(
    response: httpx.Response, paths: _Paths, offset: int, info: dict[str, Any]
) -> _Fetched:
    """Handle HTTP 416 to a range request: the part may already hold the whole file.

    Args:
        response: the 416 response.
        paths: the files of this download.
        offset: the size of the part, where the range started.
        info: the part's recorded validators (``<name>.part.json``).

    Returns:
        The transfer as complete, when the server's length equals the part's size.

    Raises:
        _Restart: otherwise; the part was discarded so the next try starts over.
    """
    match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
    if match and int(match[1]) == offset:  # the part already holds the whole file
        return _Fetched(offset, info.get("etag"), info.get("last_modified"))
    _discard_part(paths)
    raise _Restart


def _raise_for_failed_status(url: str, status: int) -> None:
    """Raise for an error status: retryable ones for another try, other 4xx at once.

    Args:
        url: the URL, for the message.
        status: the response's HTTP status.

    Raises:
        _RetryableStatus: for 5xx, 408 and 429 (the server may answer later).
        DatasetError: for any other status of 400 or more.
    """
    if status >= 500 or status in _RETRYABLE_4XX:
        raise _RetryableStatus(status)
    if status >= 400:
        raise _http_error(url, status)


def _resume_part(
    response: httpx.Response, url: str, paths: _Paths, offset: int, info: dict[str, Any]
) -> _Fetched:
    """Check that a 206 answer continues the part exactly where it ends.

    Args:
        response: the 206 response.
        url: the URL, for the log.
        paths: the files of this download.
        offset: the size of the part, where the requested range starts.
        info: the part's recorded validators, used where the response repeats none.

    Returns:
        The file's total size (``None`` if unknown) and validators.

    Raises:
        _Restart: if the Content-Range is missing or starts elsewhere; the part was discarded.
    """
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if not match or int(match[1]) != offset:
        logger.warning("%s: unusable Content-Range; restarting the download", url)
        _discard_part(paths)
        raise _Restart
    return _Fetched(
        total=None if match[3] == "*" else int(match[3]),
        etag=response.headers.get("ETag") or info.get("etag"),
        last_modified=response.headers.get("Last-Modified") or info.get("last_modified"),
    )


def _start_part(response: httpx.Response, url: str, paths: _Paths) -> _Fetched:
    """Record the validators of a 200 answer that starts the part from byte 0.

    They go to ``<name>.part.json`` before any byte is written, so an interrupted part can be
    resumed later with an ``If-Range`` that matches exactly this version.

    Args:
        response: the 200 response.
        url: the URL, recorded with the validators.
        paths: the files of this download.

    Returns:
        The file's size (``None`` if not announced in file bytes) and validators.
    """
    etag = response.headers.get("ETag")
    last_modified = response.headers.get("Last-Modified")
    total = _content_length(response)
    write_json_atomic(paths.part_info, {"url": url, "etag": etag, "last_modified": last_modified})
    return _Fetched(total, etag, last_modified)


def _write_body(
    response: httpx.Response,
    paths: _Paths,
    mode: str,
    offset: int,
    total: int | None,
    progress: bool,
) -> None:
    """Stream the response body into the part file behind a progress bar.

    Args:
        response: the 200 or 206 response, body not yet read.
        paths: the files of this download.
        mode: ``"ab"`` to continue the part, ``"wb"`` to start it over.
        offset: bytes already in the part (the progress bar's start).
        total: the file's full size, if known.
        progress: show the progress bar on stderr.
    """
    # Network reads are passed on as they come (not re-chunked by httpx, which would drop a
    # half-filled chunk when the connection breaks); the file buffer writes them in CHUNK_SIZE
    # blocks and is flushed on the way out, so every byte received survives an interruption.
    with (
        paths.part.open(mode, buffering=CHUNK_SIZE) as sink,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=paths.final.name,
            disable=not progress,
            file=sys.stderr,
        ) as bar,
    ):
        for chunk in response.iter_bytes():
            sink.write(chunk)
            bar.update(len(chunk))
        sink.flush()
        os.fsync(sink.fileno())


def _finish(url: str, paths: _Paths, fetched: _Fetched, expected: str | None) -> Path:
    """Verify the complete part, move it into place and record its metadata."""
    size = paths.part.stat().st_size
    if fetched.total is not None and size != fetched.total:
        _discard_part(paths)
        raise DatasetError(
            f"{url}: received {size} bytes but the server announced {fetched.total}; "
            "the download was discarded: try again"
        )
    digest = sha256_file(paths.part)
    if expected is not None and digest != expected:
        _discard_part(paths)
        raise DatasetError(
            f"{url}: the downloaded file has sha256 {digest}, which does not match the expected "
            f"sha256 {expected}; the download was discarded: check the URL and the #sha256= value"
        )
    paths.meta.unlink(missing_ok=True)  # never let old validators describe the new file
    os.replace(paths.part, paths.final)
    paths.part_info.unlink(missing_ok=True)
    write_json_atomic(
        paths.meta,
        {
            "url": url,
            "etag": fetched.etag,
            "last_modified": fetched.last_modified,
            "size": size,
            "sha256": digest,
            "downloaded_at": datetime.now(UTC).isoformat(),
        },
    )
    logger.info("downloaded %s (%d bytes, sha256 %s)", paths.final, size, digest)
    return paths.final


def _resume_point(url: str, paths: _Paths) -> tuple[int, str | None]:
    """Bytes already on disk and the ``If-Range`` validator recorded when the part started."""
    try:
        size = paths.part.stat().st_size
    except FileNotFoundError:
        return 0, None
    info = _read_json(paths.part_info)
    validator = _if_range_validator(info) if info.get("url") == url else None
    if size and validator is None:
        # Without a validator a resumed body could belong to a newer version: start over.
        logger.info("%s cannot be resumed safely (no validator recorded); restarting", paths.part)
    return size, validator


def _if_range_validator(info: dict[str, Any]) -> str | None:
    etag = info.get("etag")
    if etag and not etag.startswith("W/"):  # weak ETags are not allowed in If-Range
        return etag
    return info.get("last_modified") or None


def _part_is_newer_version(url: str, paths: _Paths, meta: dict[str, Any]) -> bool:
    """Whether a leftover part belongs to a different version than the cached file."""
    if not paths.part.exists():
        return False
    info = _read_json(paths.part_info)
    if info.get("url") != url or _if_range_validator(info) is None:
        return False
    cached = (meta.get("etag"), meta.get("last_modified"))
    return any(cached) and (info.get("etag"), info.get("last_modified")) != cached


def _conditional_headers(meta: dict[str, Any]) -> dict[str, str]:
    headers = {}
    if meta.get("etag"):
        headers["If-None-Match"] = meta["etag"]
    if meta.get("last_modified"):
        headers["If-Modified-Since"] = meta["last_modified"]
    return headers


def _head_matches_cache(client: httpx.Client, url: str, final: Path) -> bool:
    """Compare the server's Content-Length with the cached size (servers without validators)."""
    try:
        response = client.head(url)
    except httpx.TransportError as error:
        logger.warning("cannot revalidate %s (%s); using the cached copy %s", url, error, final)
        return True
    if response.status_code >= 500:
        logger.warning(
            "cannot revalidate %s (HTTP %d); using the cached copy", url, response.status_code
        )
        return True
    length = _content_length(response) if response.status_code == 200 else None
    if length is not None and length == final.stat().st_size:
        logger.info("%s has the cached size (no validators); using cached %s", url, final)
        return True
    return False


def _content_length(response: httpx.Response) -> int | None:
    encoding = response.headers.get("Content-Encoding", "identity").lower()
    value = response.headers.get("Content-Length")
    if encoding != "identity" or value is None or not value.strip().isdigit():
        return None  # with a content coding the header counts encoded bytes, not file bytes
    return int(value)


def _http_error(url: str, status: int) -> DatasetError:
    if status in (404, 410):
        return DatasetError(f"{url} was not found (HTTP {status}): check the URL in FER_DATASET")
    if status in (401, 403):
        return DatasetError(
            f"{url}: the server refused access (HTTP {status}): check the URL or credentials"
        )
    return DatasetError(
        f"{url}: the server rejected the request (HTTP {status}): check the URL in FER_DATASET"
    )


def _unreachable(url: str, paths: _Paths, error: Exception | None, attempts: int) -> _Unreachable:
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(error, _RetryableStatus):
        return _Unreachable(
            f"{url}: the server answered HTTP {error.status} on all {tries}: "
            "try again later or point FER_DATASET at a local copy"
        )
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        host = urlsplit(url).hostname
        try:
            host = error.request.url.host  # after a redirect, the host that failed
        except RuntimeError:
            pass
        return _Unreachable(
            f"cannot reach host {host} for {url} ({error}) after {tries}: "
            "check the network or point FER_DATASET at a local copy"
        )
    kept = (
        f"; the partial download is kept in {paths.part} and resumes on the next run"
        if paths.part.exists()
        else ""
    )
    return _Unreachable(
        f"download of {url} failed after {tries} ({error}){kept}: "
        "check the network or point FER_DATASET at a local copy"
    )


def _normalise_sha256(url: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not _SHA256_HEX.match(value.strip()):
        raise DatasetError(f"{url}: expected sha256 {value!r} is not 64 hex digits")
    return value.strip().lower()


def _discard_part(paths: _Paths) -> None:
    paths.part.unlink(missing_ok=True)
    paths.part_info.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
