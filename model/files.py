"""Small file helpers every layer uses: a file's sha256 and atomic writes (stdlib only)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks.

    Args:
        path: the file.

    Returns:
        The digest.
    """
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file that readers see whole or not at all (a rename over the old one).

    Args:
        path: the file; its folder is created if missing.
        text: the content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """:func:`write_text_atomic` of ``data`` as indented JSON with a final newline."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
