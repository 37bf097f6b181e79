"""The code version every manifest and validation run records."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def code_version() -> str:
    """The package version plus the git commit when run from a checkout.

    Returns:
        e.g. ``0.1.0+g1a2b3c4d`` (``-dirty`` appended for uncommitted changes).
    """
    try:
        version = metadata.version("fer-platform")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=10"],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{described}"
