"""Safe, atomic extraction of dataset archives (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``).

Every member is validated before anything is written: absolute paths, ``..`` components
(slash or backslash separated), links and special files are refused, and the declared number of
entries and uncompressed bytes must fit :class:`ArchiveLimits`. The byte limit is enforced again
on the bytes really written, so an archive whose headers understate its sizes cannot get past it.
Extraction goes into a hidden temporary sibling of the destination which is renamed into place
only when complete, so a half-extracted folder never appears at the destination.
"""

from __future__ import annotations

import logging
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from model.errors import DatasetError
from model.settings import ArchiveLimits

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar.gz", ".tgz", ".tar")

_ZIP_SUFFIXES = (".zip",)
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_REDOWNLOAD = "re-download the archive from a trusted source"
# What reading a damaged or truncated archive raises: zip/tar format errors, a compressed stream
# that ends early (EOFError), bad deflate/xz data, and gzip.BadGzipFile (an OSError).
_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    OSError,
)


@dataclass(frozen=True)
class _Member:
    """One validated archive member: where it goes and what it is."""

    raw_name: str
    path: str  # normalised relative POSIX path; "" for the archive's root folder ("./")
    is_dir: bool
    declared_size: int
    info: zipfile.ZipInfo | tarfile.TarInfo


def is_archive(path: Path) -> bool:
    """Tell whether ``path`` names a supported archive, by its case-insensitive suffix.

    Args:
        path: any file path; it need not exist.

    Returns:
        True when the name ends with one of :data:`ARCHIVE_SUFFIXES`.
    """
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(
    archive: Path,
    dest: Path,
    limits: ArchiveLimits = ArchiveLimits(),  # noqa: B008 - frozen model, safe to share
) -> Path:
    """Safely extract a .zip/.tar/.tar.gz into ``dest`` atomically and return ``dest``.

    If ``dest`` already exists it is returned untouched (extraction is keyed by the caller,
    e.g. by the archive's sha256). Otherwise every member is validated first, then the archive
    is streamed into a temporary sibling folder which is renamed to ``dest`` when complete. If
    another process wins the race to create ``dest``, its result is returned.

    Args:
        archive: the archive file; its suffix picks the format (see :data:`ARCHIVE_SUFFIXES`).
        dest: the folder to create with the archive's contents.
        limits: bounds on the number of entries and on the uncompressed size.

    Returns:
        ``dest``.

    Raises:
        DatasetError: the suffix is unsupported, the archive is missing, corrupt or truncated,
            a member is unsafe (absolute path, path traversal, link, special file), a limit is
            exceeded, or the files cannot be written.
    """
    kind = _archive_kind(archive)
    if dest.exists():
        logger.debug("archive %s already extracted at %s", archive, dest)
        return dest
    if not archive.is_file():
        raise DatasetError(
            f"archive {archive} does not exist or is not a file; download it again or point "
            "FER_DATASET at an existing archive"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        logger.info("extracting %s into %s", archive, dest)
        if kind == "zip":
            count, written = _extract_zip(archive, tmp, limits)
        else:
            count, written = _extract_tar(archive, tmp, limits)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.exists():
                raise
            # Another process extracted the same archive first: keep its result.
            logger.info("archive %s was extracted concurrently; using %s", archive, dest)
            shutil.rmtree(tmp, ignore_errors=True)
            return dest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("extracted %d entries (%d bytes) from %s into %s", count, written, archive, dest)
    return dest


# --- format-specific listing --------------------------------------------------------------------


def _archive_kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(_ZIP_SUFFIXES):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    raise DatasetError(
        f"archive {archive} has an unsupported suffix; supported archives end with "
        f"{', '.join(ARCHIVE_SUFFIXES)} — repack it as one of those or extract it yourself "
        "and point FER_DATASET at the folder"
    )


def member_declared_size(info: zipfile.ZipInfo | tarfile.TarInfo) -> int:
    """The uncompressed size a member's header claims."""
    return info.file_size if isinstance(info, zipfile.ZipInfo) else info.size


@contextmanager
def _reading(archive: Path) -> Iterator[None]:
    """Turn errors raised while reading a damaged archive into a DatasetError."""
    try:
        yield
    except _CORRUPT_ERRORS as exc:
        raise _corrupt_error(archive, exc) from exc


def _extract_zip(archive: Path, tmp: Path, limits: ArchiveLimits) -> tuple[int, int]:
    with _reading(archive), zipfile.ZipFile(archive) as zf:
        members = [_zip_member(archive, info) for info in zf.infolist()]
        _check_limits(archive, members, limits)

        def open_member(member: _Member) -> IO[bytes]:
            info = member.info
            assert isinstance(info, zipfile.ZipInfo)
            if info.flag_bits & 0x1:
                raise DatasetError(
                    f"archive {archive}: member {member.raw_name!r} is encrypted; provide an "
                    "archive without a password"
                )
            try:
                return zf.open(info)
            except NotImplementedError as exc:
                raise DatasetError(
                    f"archive {archive}: member {member.raw_name!r} uses an unsupported "
                    f"compression method ({exc}); repack the archive with deflate"
                ) from exc

        written = _write_members(archive, members, open_member, tmp, limits)
    return len(members), written


def _extract_tar(archive: Path, tmp: Path, limits: ArchiveLimits) -> tuple[int, int]:
    with _reading(archive), tarfile.open(archive, "r:*") as tar:
        members = [_tar_member(archive, info, tmp) for info in tar.getmembers()]
        _check_limits(archive, members, limits)

        def open_member(member: _Member) -> IO[bytes]:
            assert isinstance(member.info, tarfile.TarInfo)
            source = tar.extractfile(member.info)
            if source is None:  # only regular files reach here; a None means a bug upstream
                raise DatasetError(
                    f"archive {archive}: member {member.raw_name!r} has no readable data; "
                    f"{_REDOWNLOAD}"
                )
            return source

        written = _write_members(archive, members, open_member, tmp, limits)
    return len(members), written


def _zip_member(archive: Path, info: zipfile.ZipInfo) -> _Member:
    raw = info.filename
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        raise _link_error(archive, raw, "a symbolic link")
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _special_error(archive, raw, f"a special file (mode {file_type:o})")
    is_dir = info.is_dir() or raw.endswith("\\") or file_type == stat.S_IFDIR
    path = _safe_path(archive, raw, is_dir)
    return _Member(raw, path, is_dir, 0 if is_dir else member_declared_size(info), info)


def _tar_member(archive: Path, info: tarfile.TarInfo, tmp: Path) -> _Member:
    raw = info.name
    if info.issym():
        raise _link_error(archive, raw, f"a symbolic link (to {info.linkname!r})")
    if info.islnk():
        raise _link_error(archive, raw, f"a hard link (to {info.linkname!r})")
    if info.ischr() or info.isblk():
        raise _special_error(archive, raw, "a device file")
    if info.isfifo():
        raise _special_error(archive, raw, "a FIFO (named pipe)")
    if not (info.isreg() or info.isdir()):
        raise _special_error(archive, raw, f"a special member (tar type {info.type!r})")
    path = _safe_path(archive, raw, info.isdir())
    if hasattr(tarfile, "data_filter"):
        # Defence in depth: the stdlib "data" extraction filter must agree the member is safe.
        try:
            filtered = tarfile.data_filter(info, str(tmp))
        except tarfile.FilterError as exc:
            raise DatasetError(
                f"archive {archive}: member {raw!r} is refused by the tar 'data' filter ({exc}); "
                f"{_REDOWNLOAD}"
            ) from exc
        if filtered is None:
            raise DatasetError(
                f"archive {archive}: member {raw!r} is refused by the tar 'data' filter; "
                f"{_REDOWNLOAD}"
            )
    return _Member(raw, path, info.isdir(), 0 if info.isdir() else member_declared_size(info), info)


# --- validation ---------------------------------------------------------------------------------


def _safe_path(archive: Path, raw: str, is_dir: bool) -> str:
    """The member's relative POSIX path, or a DatasetError if it could leave the folder."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        raise DatasetError(
            f"archive {archive}: member {raw!r} has an absolute path and would be written "
            f"outside the extraction folder; {_REDOWNLOAD}"
        )
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise DatasetError(
            f"archive {archive}: member {raw!r} escapes the extraction folder (path traversal); "
            f"{_REDOWNLOAD}"
        )
    if "\x00" in name:
        raise DatasetError(
            f"archive {archive}: member {raw!r} has a NUL byte in its name; {_REDOWNLOAD}"
        )
    if not parts and not is_dir:
        raise DatasetError(f"archive {archive}: a file member has an empty name; {_REDOWNLOAD}")
    return str(PurePosixPath(*parts)) if parts else ""


def _link_error(archive: Path, raw: str, what: str) -> DatasetError:
    return DatasetError(
        f"archive {archive}: member {raw!r} is {what}; links are refused because they can "
        f"point outside the extraction folder — {_REDOWNLOAD} or repack it without links"
    )


def _special_error(archive: Path, raw: str, what: str) -> DatasetError:
    return DatasetError(
        f"archive {archive}: member {raw!r} is {what}; only regular files and folders can be "
        f"extracted — {_REDOWNLOAD} or repack it with regular files only"
    )


def _check_limits(archive: Path, members: list[_Member], limits: ArchiveLimits) -> None:
    if len(members) > limits.max_files:
        culprit = members[limits.max_files].raw_name
        raise DatasetError(
            f"archive {archive} holds {len(members):,} entries, more than "
            f"ArchiveLimits.max_files={limits.max_files:,} (member {culprit!r} is the first past "
            "the limit); raise max_files (FER_ARCHIVE_MAX_FILES) if the archive is trusted, "
            f"otherwise {_REDOWNLOAD}"
        )
    total = 0
    for member in members:
        total += member.declared_size
        if total > limits.max_total_bytes:
            declared = sum(m.declared_size for m in members)
            raise DatasetError(
                f"archive {archive} declares {declared:,} uncompressed bytes, more than "
                f"ArchiveLimits.max_total_bytes={limits.max_total_bytes:,} (member "
                f"{member.raw_name!r} is the first past the limit); raise max_total_bytes "
                f"(FER_ARCHIVE_MAX_BYTES) if the archive is trusted, otherwise {_REDOWNLOAD}"
            )


# --- writing ------------------------------------------------------------------------------------


def _write_members(
    archive: Path,
    members: list[_Member],
    open_member: Callable[[_Member], IO[bytes]],
    tmp: Path,
    limits: ArchiveLimits,
) -> int:
    """Stream every validated member into ``tmp``; return the bytes really written."""
    written = 0
    for member in members:
        target = tmp / member.path if member.path else tmp
        if member.is_dir:
            _make_folder(archive, member, target)
            continue
        _make_folder(archive, member, target.parent)
        with open_member(member) as source:
            written = _copy_member(archive, member, source, target, written, limits)
    return written


def _make_folder(archive: Path, member: _Member, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(archive, member, folder, exc) from exc


def _copy_member(
    archive: Path,
    member: _Member,
    source: IO[bytes],
    target: Path,
    written: int,
    limits: ArchiveLimits,
) -> int:
    """Copy one member in chunks, enforcing the byte limit on the real running total."""
    try:
        with target.open("wb") as out:
            while True:
                try:
                    chunk = source.read(_CHUNK)
                except _CORRUPT_ERRORS as exc:
                    raise _corrupt_error(archive, exc) from exc
                if not chunk:
                    return written
                written += len(chunk)
                if written > limits.max_total_bytes:
                    # Headers were checked already, so reaching this means they understate sizes.
                    raise DatasetError(
                        f"archive {archive}: member {member.raw_name!r} expands past "
                        f"ArchiveLimits.max_total_bytes={limits.max_total_bytes:,} while "
                        "extracting, although its headers declared less (the archive lies "
                        f"about its sizes); {_REDOWNLOAD}"
                    )
                out.write(chunk)
    except OSError as exc:  # reads are converted above, so this is the file being written
        raise _write_error(archive, member, target, exc) from exc


def _write_error(archive: Path, member: _Member, path: Path, exc: OSError) -> DatasetError:
    return DatasetError(
        f"archive {archive}: cannot write {path} for member {member.raw_name!r} ({exc}); check "
        "free disk space and permissions, and that the archive does not hold a file and a "
        "folder with the same name"
    )


def _corrupt_error(archive: Path, exc: BaseException) -> DatasetError:
    return DatasetError(
        f"archive {archive} is corrupt or incomplete ({type(exc).__name__}: {exc}); {_REDOWNLOAD}"
    )
