"""Shared fixtures: the real FER2013 copy, a small deterministic subset, and live services."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.contract import CLASSES, SPLITS

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The real dataset; CI has ../shared beside the checkout. Override with FER_TEST_DATA.
FER2013 = Path(os.environ.get("FER_TEST_DATA", REPO_ROOT.parent / "shared" / "fer2013"))


def make_subset(source: Path, target: Path, per_class: dict[str, int]) -> Path:
    """Copy an evenly spaced, deterministic sample of each split/class folder.

    Args:
        source: a FER-layout folder.
        target: where the subset goes.
        per_class: images per class for each split.

    Returns:
        ``target``.
    """
    for split in SPLITS:
        for label in CLASSES:
            files = sorted((source / split / label).iterdir())
            step = max(len(files) // per_class[split], 1)
            (target / split / label).mkdir(parents=True, exist_ok=True)
            for path in files[::step][: per_class[split]]:
                shutil.copy2(path, target / split / label / path.name)
    return target


@pytest.fixture(scope="session")
def fer2013_root() -> Path:
    """The real FER2013 train + public test folder (read-only)."""
    if not (FER2013 / "train").is_dir():
        pytest.fail(f"real FER2013 not found at {FER2013}; set FER_TEST_DATA to its folder")
    return FER2013


@pytest.fixture(scope="session")
def fer_subset(tmp_path_factory: pytest.TempPathFactory, fer2013_root: Path) -> Path:
    """30 train and 10 test images per class of the real dataset, the same every run."""
    return make_subset(
        fer2013_root, tmp_path_factory.mktemp("fer_subset"), {"train": 30, "test": 10}
    )


@pytest.fixture(scope="session")
def platform_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """FER_* settings for the session: a fresh home and free ports, set in the environment."""
    from infra.services import free_port

    env = {
        "FER_HOME": str(tmp_path_factory.mktemp("fer_home")),
        "FER_PREFECT_PORT": str(free_port()),
        "FER_S3_PORT": str(free_port()),
        "FER_S3_BUCKET": "fer-test",
        "FER_CHAMPION_POLL_SECONDS": "1",
        # The session's Prefect server re-offers a deployment's queued run after 5 s, not 30.
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "5",
        # Workers (started from here, they inherit it) ask for runs every second, not every 10.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


@pytest.fixture(scope="session")
def services(platform_env: dict[str, str]) -> Iterator[object]:
    """A real Prefect server and SeaweedFS on 127.0.0.1 for the session; stopped after."""
    from infra.services import services_down, services_up
    from model.settings import get_settings

    settings = get_settings()
    services_up(settings)
    try:
        yield settings
    finally:
        services_down(settings)
