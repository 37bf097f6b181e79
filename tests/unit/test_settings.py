from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

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


def test_a_bad_schedule_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_RETRAIN_CRON", "every night")
    with pytest.raises(ConfigError, match="'every night' is not a five-field cron expression"):
        get_settings()
    monkeypatch.setenv("FER_RETRAIN_CRON", "0 3 * * *")
    monkeypatch.setenv("FER_RETRAIN_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ConfigError, match="'Mars/Olympus' is not an IANA time zone name"):
        get_settings()
    monkeypatch.setenv("FER_RETRAIN_TIMEZONE", "Europe/Berlin")
    assert get_settings().retrain_timezone == "Europe/Berlin"


def test_deploy_checks_the_schedule_before_it_contacts_prefect(tmp_path: Path) -> None:
    from flows.deploy import deploy_retrain
    from infra.services import free_port

    # Nothing listens on this Prefect port: the schedule is refused first, with its reason.
    settings = Settings(home=tmp_path, prefect_port=free_port())
    with pytest.raises(ConfigError, match="invalid retrain schedule: '61 \\* \\* \\*'"):
        deploy_retrain(settings, cron="61 * * *")


def test_a_worker_needs_a_prefect_server(tmp_path: Path) -> None:
    from infra.services import free_port, worker_up
    from model.errors import ServiceError

    settings = Settings(home=tmp_path, prefect_port=free_port())
    with pytest.raises(ServiceError, match="no Prefect server answers .* run `fer services up`"):
        worker_up(settings)
    assert not (tmp_path / "services" / "worker" / "state.json").exists()


def test_pool_type_and_distribution_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infra.services import worker_command

    settings = Settings()
    assert (settings.work_pool_type, settings.distribute) == ("process", "none")
    monkeypatch.setenv("FER_WORK_POOL", "fer-k8s")
    monkeypatch.setenv("FER_WORK_POOL_TYPE", "kubernetes")
    monkeypatch.setenv("FER_DISTRIBUTE", "mirrored")
    settings = get_settings()
    assert (settings.work_pool_type, settings.distribute) == ("kubernetes", "mirrored")
    template = Path("infra/k8s/work-pool-cpu.json")
    command = worker_command(settings, with_healthcheck=True, base_job_template=template)
    assert command[command.index("--pool") + 1] == "fer-k8s"
    assert command[command.index("--type") + 1] == "kubernetes"
    assert "--with-healthcheck" in command
    assert command[command.index("--base-job-template") + 1] == str(template)
    monkeypatch.setenv("FER_DISTRIBUTE", "horovod")
    monkeypatch.setenv("FER_WORK_POOL_TYPE", "docker")
    with pytest.raises(ConfigError) as error:
        get_settings()
    assert "FER_DISTRIBUTE" in str(error.value) and "FER_WORK_POOL_TYPE" in str(error.value)


def test_the_settings_doc_is_the_table_the_code_generates() -> None:
    from model.settings import settings_table

    doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    start, end = "<!-- settings-table:start -->\n", "\n<!-- settings-table:end -->"
    documented = doc[doc.index(start) + len(start) : doc.index(end)]
    assert documented == settings_table(), (
        "docs/settings.md is out of date: regenerate its table with "
        '`uv run python -c "from model.settings import settings_table; print(settings_table())"`'
    )


def test_the_detection_copy_size_reaches_the_app() -> None:
    from serving.app import image_limits

    assert image_limits(Settings(serve_detect_side=320)).detect_side == 320
    assert image_limits(Settings()).detect_side == 640


def test_an_alert_block_is_named_with_its_type() -> None:
    block = "slack-webhook/fer-alerts"
    assert Settings(alert_block=block).alert_block == block
    with pytest.raises(ValidationError, match="not <block-type-slug>/<name>"):
        Settings(alert_block="fer-alerts")


def test_the_store_client_makes_the_attempts_the_settings_ask_for() -> None:
    from model.s3 import make_s3_client

    patient = make_s3_client(Settings(s3_attempts=3))
    assert patient.meta.config.retries["total_max_attempts"] == 3
    polling = make_s3_client(Settings(s3_attempts=3), timeout=1.0)  # serving's poll: one try
    assert polling.meta.config.retries["total_max_attempts"] == 1
    with pytest.raises(ValidationError):
        Settings(s3_attempts=0)
