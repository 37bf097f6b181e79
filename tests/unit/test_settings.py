from __future__ import annotations

import os
from pathlib import Path

import pytest

from model.errors import ConfigError
from model.settings import Settings, get_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_fer_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Start from no FER_* variables and no .env, whatever the session has set."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("FER_")]:
        monkeypatch.delenv(key)


def test_defaults_point_at_local_services() -> None:
    settings = Settings()
    assert settings.dataset == "kaggle://msambare/fer2013"
    assert settings.s3_url == "http://127.0.0.1:8333"
    assert settings.prefect_url == "http://127.0.0.1:4200/api"
    assert settings.prefect_ui_url == "http://127.0.0.1:4200"
    assert settings.home_dir == (Path.home() / ".fer").resolve()


def test_environment_and_dotenv_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("FER_S3_BUCKET=from-dotenv\nFER_SERVE_PORT=9000\n")
    monkeypatch.setenv("FER_S3_ENDPOINT_URL", "https://s3.example.org")
    monkeypatch.setenv("FER_PREFECT_API_URL", "https://prefect.example.org/api")
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))
    settings = Settings()
    assert settings.s3_bucket == "from-dotenv" and settings.serve_port == 9000
    assert settings.s3_url == "https://s3.example.org"
    assert settings.prefect_ui_url == "https://prefect.example.org"
    assert settings.home_dir == tmp_path / "home"


def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_S3_PORT", "99999")
    monkeypatch.setenv("FER_SERVE_PORT", "http")
    with pytest.raises(ConfigError) as error:
        get_settings()
    assert "FER_S3_PORT" in str(error.value) and "FER_SERVE_PORT" in str(error.value)


def test_secret_is_not_printed() -> None:
    assert "fer-dev-secret" not in repr(Settings())
