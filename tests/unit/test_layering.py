"""Architecture rules: prefect only in tasks/ and flows/, layers import downwards."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    "model": {"model"},
    "validation": {"model", "validation"},
    "serving": {"model", "serving"},
    "infra": {"model", "infra"},
    "tasks": {"model", "validation", "tasks"},
}
PROJECT = {"model", "validation", "serving", "infra", "tasks", "flows"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["model", "validation", "serving", "infra"])
def test_prefect_is_not_imported(package: str) -> None:
    offenders = [p for p in (ROOT / package).rglob("*.py") if "prefect" in _imports(p)]
    assert offenders == []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layers_import_downwards(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        wrong = (_imports(path) & PROJECT) - ALLOWED[package]
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def test_importing_the_libraries_loads_no_prefect_and_does_no_work(tmp_path: Path) -> None:
    modules = [
        f"{p.parent.name}.{p.stem}"
        for package in ("model", "validation", "serving")
        for p in sorted((ROOT / package).glob("*.py"))
        if p.stem != "__init__"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "assert 'prefect' not in sys.modules, 'prefect was imported'\n"
        "assert 'great_expectations' not in sys.modules, 'GX imported at import time'\n"
    )
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "FER_HOME": str(home), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not home.exists(), "importing created the platform home"


def test_every_test_module_is_marked() -> None:
    """`-m unit` (or integration, e2e) selects every test of its kind, none left out."""
    unmarked = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("test_*.py"))
        if "pytestmark = pytest.mark." not in path.read_text()
    ]
    assert unmarked == []


def test_the_small_shared_helpers_import_no_heavy_stack() -> None:
    """sha256 and atomic writes, and the S3 client factory, are needed where numpy or boto3
    is not (serving's cache, data sources): importing them must stay cheap."""
    code = (
        "import sys\n"
        "import model.files, model.s3\n"
        "heavy = {'numpy', 'boto3', 'botocore', 'tensorflow', 'keras'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
