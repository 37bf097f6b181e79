from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from model.data import archives
from model.data.archives import ARCHIVE_SUFFIXES, extract_archive, is_archive
from model.errors import DatasetError
from model.settings import ArchiveLimits

pytestmark = pytest.mark.unit

GOOD_FILES = {
    "archive/train/happy/a.png": b"happy-a",
    "archive/train/sad/b.png": b"sad-b",
    "archive/test/happy/c.png": b"happy-c",
}


# --- archive builders -------------------------------------------------------------------------


def make_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix
    info.external_attr = (0o120777 & 0xFFFF) << 16
    return info, target.encode()


def tar_file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def tar_special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def tar_dir(name: str) -> tuple[tarfile.TarInfo, None]:
    return tar_special(name, tarfile.DIRTYPE)


def make_tar(
    path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz"
) -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def good_zip(path: Path) -> Path:
    dirs = ["archive/", "archive/train/", "archive/train/happy/"]
    return make_zip(path, [(d, b"") for d in dirs] + list(GOOD_FILES.items()))


def good_tar(path: Path, mode: str = "w:gz") -> Path:
    entries = [tar_dir("archive"), tar_dir("archive/train"), tar_dir("archive/train/happy")]
    return make_tar(path, entries + [tar_file(n, d) for n, d in GOOD_FILES.items()], mode)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "extracted" / "abc123"


def assert_nothing_left(dest: Path) -> None:
    assert not dest.exists()
    if dest.parent.exists():
        assert [p.name for p in dest.parent.iterdir() if ".tmp-" in p.name] == []


def rejected(archive: Path, dest: Path, limits: ArchiveLimits | None = None) -> str:
    """Extract an archive that must be refused; return the message after checking the cleanup."""
    with pytest.raises(DatasetError) as error:
        extract_archive(archive, dest, limits or ArchiveLimits())
    assert_nothing_left(dest)
    message = str(error.value)
    assert archive.name in message
    return message


# --- good archives ------------------------------------------------------------------------------


def assert_good_tree(dest: Path) -> None:
    files = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert files == GOOD_FILES
    assert [p.name for p in dest.parent.iterdir() if ".tmp-" in p.name] == []


def test_good_zip_extracts_nested_layout(tmp_path: Path, dest: Path) -> None:
    assert extract_archive(good_zip(tmp_path / "fer.zip"), dest) == dest
    assert_good_tree(dest)


@pytest.mark.parametrize(
    ("name", "mode"), [("fer.tar.gz", "w:gz"), ("fer.tgz", "w:gz"), ("fer.tar", "w")]
)
def test_good_tar_extracts_nested_layout(tmp_path: Path, dest: Path, name: str, mode: str) -> None:
    assert extract_archive(good_tar(tmp_path / name, mode), dest) == dest
    assert_good_tree(dest)


def test_tar_made_with_dot_root_and_windows_separators_extracts(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(
        tmp_path / "fer.tar.gz",
        [tar_dir("."), tar_file("./archive/train/happy/a.png", b"x")],
    )
    zipped = make_zip(tmp_path / "win.zip", [("archive\\train\\sad\\b.png", b"y")])
    extract_archive(archive, dest)
    assert (dest / "archive/train/happy/a.png").read_bytes() == b"x"
    extract_archive(zipped, tmp_path / "win")
    assert (tmp_path / "win/archive/train/sad/b.png").read_bytes() == b"y"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fer.zip", True),
        ("FER.ZIP", True),
        ("fer.tar.gz", True),
        ("fer.TGZ", True),
        ("fer.tar", True),
        ("fer.gz", False),
        ("fer.rar", False),
        ("fer.zip.part", False),
        ("fer2013", False),
    ],
)
def test_is_archive_by_case_insensitive_suffix(name: str, expected: bool) -> None:
    assert is_archive(Path("/data") / name) is expected


def test_suffixes_are_the_supported_ones() -> None:
    assert set(ARCHIVE_SUFFIXES) == {".zip", ".tar.gz", ".tgz", ".tar"}


def test_existing_dest_is_returned_untouched(tmp_path: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    (dest / "marker.txt").write_text("mine")
    assert extract_archive(good_zip(tmp_path / "fer.zip"), dest) == dest
    assert [p.name for p in dest.iterdir()] == ["marker.txt"]
    assert (dest / "marker.txt").read_text() == "mine"


def test_losing_a_race_returns_the_winners_folder(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def winner_first(src: Path, dst: Path) -> None:
        # Another process finishes first: dest appears just before our rename.
        Path(dst).mkdir()
        (Path(dst) / "winner.txt").write_text("first")
        real_replace(src, dst)

    monkeypatch.setattr(archives.os, "replace", winner_first)
    assert extract_archive(good_zip(tmp_path / "fer.zip"), dest) == dest
    assert [p.name for p in dest.iterdir()] == ["winner.txt"]
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


def test_limits_are_frozen_and_strict() -> None:
    limits = ArchiveLimits()
    assert limits.max_files == 200_000 and limits.max_total_bytes == 4 * 1024**3
    with pytest.raises(ValidationError):
        ArchiveLimits(max_file=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        limits.max_files = 1  # type: ignore[misc]


# --- unsafe members ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil.txt", "archive/../../evil.txt", "..\\evil.txt"])
def test_zip_path_traversal_is_refused(tmp_path: Path, dest: Path, name: str) -> None:
    archive = make_zip(tmp_path / "fer.zip", [*GOOD_FILES.items(), (name, b"pwned")])
    message = rejected(archive, dest)
    assert repr(name) in message and "path traversal" in message
    assert "re-download" in message
    assert not (tmp_path / "evil.txt").exists() and not (dest.parent / "evil.txt").exists()


def test_tar_path_traversal_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "fer.tar.gz", [tar_file("../evil.txt", b"pwned")])
    message = rejected(archive, dest)
    assert "'../evil.txt'" in message and "path traversal" in message


@pytest.mark.parametrize("name", ["/etc/evil", "C:\\evil.txt", "c:/evil.txt", "\\evil.txt"])
def test_zip_absolute_path_is_refused(tmp_path: Path, dest: Path, name: str) -> None:
    archive = make_zip(tmp_path / "fer.zip", [(name, b"pwned")])
    message = rejected(archive, dest)
    assert repr(name) in message and "absolute path" in message


def test_tar_absolute_path_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "fer.tar.gz", [tar_file("/etc/evil", b"pwned")])
    message = rejected(archive, dest)
    assert "'/etc/evil'" in message and "absolute path" in message


def test_tar_symlink_is_refused(tmp_path: Path, dest: Path) -> None:
    entries = [
        tar_file("archive/a.png", b"a"),
        tar_special("archive/link", tarfile.SYMTYPE, "/etc/passwd"),
    ]
    message = rejected(make_tar(tmp_path / "fer.tar.gz", entries), dest)
    assert "'archive/link'" in message and "symbolic link" in message and "/etc/passwd" in message


def test_zip_symlink_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "fer.zip", [zip_symlink("archive/link", "/etc/passwd")])
    message = rejected(archive, dest)
    assert "'archive/link'" in message and "symbolic link" in message


def test_tar_hard_link_is_refused(tmp_path: Path, dest: Path) -> None:
    entries = [
        tar_file("archive/a.png", b"a"),
        tar_special("archive/hard", tarfile.LNKTYPE, "archive/a.png"),
    ]
    message = rejected(make_tar(tmp_path / "fer.tar.gz", entries), dest)
    assert "'archive/hard'" in message and "hard link" in message


@pytest.mark.parametrize(
    ("kind", "what"),
    [(tarfile.CHRTYPE, "device"), (tarfile.BLKTYPE, "device"), (tarfile.FIFOTYPE, "FIFO")],
)
def test_tar_special_files_are_refused(tmp_path: Path, dest: Path, kind: bytes, what: str) -> None:
    archive = make_tar(tmp_path / "fer.tar", [tar_special("archive/dev", kind)], mode="w")
    message = rejected(archive, dest)
    assert "'archive/dev'" in message and what in message


def test_nothing_is_written_when_a_later_member_is_unsafe(tmp_path: Path, dest: Path) -> None:
    entries = [tar_file(n, d) for n, d in GOOD_FILES.items()] + [tar_file("../evil", b"x")]
    rejected(make_tar(tmp_path / "fer.tar.gz", entries), dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == []


# --- limits --------------------------------------------------------------------------------------


def test_too_many_files_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "fer.zip", [(f"archive/{i}.png", b"x") for i in range(5)])
    message = rejected(archive, dest, ArchiveLimits(max_files=3))
    assert "5 entries" in message and "max_files=3" in message and "'archive/3.png'" in message


def test_too_many_declared_bytes_is_refused(tmp_path: Path, dest: Path) -> None:
    entries = [tar_file(f"archive/{i}.png", b"x" * 100) for i in range(3)]
    archive = make_tar(tmp_path / "fer.tar.gz", entries)
    message = rejected(archive, dest, ArchiveLimits(max_total_bytes=250))
    assert "300 uncompressed bytes" in message and "max_total_bytes=250" in message
    assert "'archive/2.png'" in message


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_real_bytes_are_counted_when_headers_understate_sizes(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # The stdlib readers never yield more bytes than a header declares, so a lying archive cannot
    # be built with them; instead the header check is blinded (every member declares 0 bytes) and
    # only the count of bytes really written can stop the extraction.
    files = [(f"archive/{i}.png", b"x" * 100) for i in range(3)]
    if kind == "zip":
        archive = make_zip(tmp_path / "fer.zip", list(files))
    else:
        archive = make_tar(tmp_path / "fer.tar.gz", [tar_file(n, d) for n, d in files])
    monkeypatch.setattr(archives, "member_declared_size", lambda info: 0)
    message = rejected(archive, dest, ArchiveLimits(max_total_bytes=250))
    assert "'archive/2.png'" in message and "while extracting" in message
    assert "max_total_bytes=250" in message


def test_zip_whose_header_lies_about_its_size_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "fer.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/big.png", b"x" * 10_000)
        zf.getinfo("archive/big.png").file_size = 10  # central directory now understates it
    message = rejected(archive, dest, ArchiveLimits(max_total_bytes=1_000))
    assert "corrupt or incomplete" in message and "re-download" in message


# --- damaged or unsupported archives -------------------------------------------------------------


def test_random_bytes_zip_is_corrupt(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "fer.zip"
    archive.write_bytes(os.urandom(4096))
    message = rejected(archive, dest)
    assert "corrupt or incomplete" in message and "re-download" in message


def test_truncated_tar_gz_is_corrupt(tmp_path: Path, dest: Path) -> None:
    entries = [tar_file(f"archive/{i}.png", os.urandom(64 * 1024)) for i in range(4)]
    full = make_tar(tmp_path / "full.tar.gz", entries).read_bytes()
    archive = tmp_path / "fer.tar.gz"
    archive.write_bytes(full[: len(full) // 2])
    message = rejected(archive, dest)
    assert "corrupt or incomplete" in message and "re-download" in message


def test_truncated_plain_tar_is_corrupt(tmp_path: Path, dest: Path) -> None:
    entries = [tar_file(f"archive/{i}.png", os.urandom(64 * 1024)) for i in range(2)]
    full = make_tar(tmp_path / "full.tar", entries, mode="w").read_bytes()
    archive = tmp_path / "fer.tar"
    archive.write_bytes(full[: 512 + 1000])  # first header and part of its data
    message = rejected(archive, dest)
    assert "corrupt or incomplete" in message


def test_unsupported_suffix_lists_the_supported_ones(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "fer.rar"
    archive.write_bytes(b"Rar!")
    message = rejected(archive, dest)
    assert all(suffix in message for suffix in ARCHIVE_SUFFIXES)


def test_missing_archive_is_reported(tmp_path: Path, dest: Path) -> None:
    message = rejected(tmp_path / "fer.zip", dest)
    assert "does not exist" in message


def test_encrypted_zip_member_is_refused(tmp_path: Path, dest: Path) -> None:
    # zipfile cannot encrypt, so set the "encrypted" flag bit in the central directory by hand.
    data = bytearray(make_zip(tmp_path / "plain.zip", [("archive/a.png", b"x")]).read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1
    archive = tmp_path / "fer.zip"
    archive.write_bytes(bytes(data))
    message = rejected(archive, dest)
    assert "'archive/a.png'" in message and "encrypted" in message


def test_file_and_folder_with_the_same_name_cannot_be_written(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "fer.zip", [("archive/a", b"file"), ("archive/a/b.png", b"x")])
    message = rejected(archive, dest)
    assert "'archive/a/b.png'" in message and "cannot write" in message
