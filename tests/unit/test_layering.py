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
#: Inside model/: what each sub-package may import besides the root modules (contract, settings,
#: errors, files, s3, version), which import no sub-package. Data flows data -> training ->
#: evaluation; inference is below training (a model is loaded with its layers); registry is on
#: top, as lineage, the model card and import record what training and evaluation produced.
MODEL_ALLOWED = {
    "": set(),
    "data": {"data"},
    "inference": {"inference"},
    "training": {"data", "inference", "training"},
    "evaluation": {"data", "inference", "training", "evaluation"},
    "registry": {"data", "inference", "training", "evaluation", "registry"},
    # Reads the served model's metrics and keeps its reports in the store.
    "monitoring": {"registry", "monitoring"},
}


def _is_module(name: str) -> bool:
    where = ROOT.joinpath(*name.split("."))
    return where.with_suffix(".py").is_file() or where.is_dir()


def _modules(path: Path) -> set[str]:
    """Every module ``path`` imports, lazily or not (type-only imports included).

    ``from model.data import cleaning`` counts as importing ``model.data.cleaning``.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            inner = {f"{node.module}.{alias.name}" for alias in node.names}
            names |= {name for name in inner if _is_module(name)} or {node.module}
    return names


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules(path)}


def _model_part(module: str) -> str:
    """``model.data.dataset`` or ``model.data`` -> ``data``; ``model.contract`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (ROOT / "model" / parts[1]).is_dir() else ""


@pytest.mark.parametrize("package", ["model", "validation", "serving", "infra"])
def test_prefect_is_not_imported(package: str) -> None:
    offenders = [p for p in (ROOT / package).rglob("*.py") if "prefect" in _imports(p)]
    assert offenders == []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layers_import_downwards(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        wrong = (_imports(path) & PROJECT) - ALLOWED[package]
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def test_model_subpackages_import_along_the_allowed_directions() -> None:
    checked = 0
    for path in sorted((ROOT / "model").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        allowed = MODEL_ALLOWED[_model_part(module)]
        for name in _modules(path):
            if name.startswith("model.") and _model_part(name):
                assert _model_part(name) in allowed, f"{module} imports {name}"
        checked += 1
    assert checked > 20


def test_the_model_store_needs_only_the_root_modules() -> None:
    """Serving and the CLI read the store without loading the training stack."""
    inside = {n for n in _modules(ROOT / "model/registry/store.py") if n.startswith("model.")}
    assert inside and not any(_model_part(name) for name in inside), inside


def test_importing_the_libraries_loads_no_prefect_and_does_no_work(tmp_path: Path) -> None:
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in ("model", "validation", "serving")
        for p in sorted((ROOT / package).rglob("*.py"))
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


@pytest.mark.parametrize(
    ("modules", "heavy"),
    [
        # sha256, atomic writes, the S3 client factory, the contract, settings and the code
        # version are needed where numpy or boto3 is not (serving's cache, data sources).
        (
            "model.files, model.s3, model.contract, model.settings, model.errors, model.version",
            "numpy boto3 botocore tensorflow keras",
        ),
        # The validate step records the code version; the store and the training config are
        # read by the CLI and serving: none of them needs the training stack.
        ("validation.run, model.registry.store, model.training.config", "tensorflow keras"),
    ],
)
def test_small_needs_import_no_heavy_stack(modules: str, heavy: str) -> None:
    code = (
        "import sys\n"
        f"import {modules}\n"
        f"loaded = set({heavy.split()!r}) & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
