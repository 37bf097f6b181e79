from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from flows.cli import app

pytestmark = pytest.mark.unit


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    # Typer vendors its own click: walk the command tree by duck typing.
    found: list[tuple[str, Any]] = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if hasattr(command, "commands"):
            found += _commands(command, f"{prefix}{name} ")
    return found


def test_every_command_and_option_has_help() -> None:
    commands = _commands(typer.main.get_command(app))
    names = {name for name, _ in commands}
    assert {
        "up",
        "retrain",
        "serve",
        "deploy",
        "worker",
        "models",
        "models list",
        "models show",
        "models promote",
        "models rollback",
        "models verify",
        "models prune",
        "services",
        "services up",
        "services down",
        "services status",
    } <= names
    for name, command in commands:
        assert command.help, f"`fer {name}` has no help"
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"`fer {name} {param.opts[0]}` has no help"


def test_help_runs() -> None:
    result = CliRunner().invoke(app, ["retrain", "--help"])
    assert result.exit_code == 0
    assert "--min-accuracy" in result.output


def test_status_with_nothing_running(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FER_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["services", "status"])
    assert result.exit_code == 0
    assert result.output.count("not running") == 3  # prefect, seaweedfs, worker


def test_platform_errors_are_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from infra.services import free_port

    monkeypatch.setenv("FER_HOME", str(tmp_path))
    monkeypatch.setenv("FER_PREFECT_PORT", str(free_port()))
    result = CliRunner().invoke(app, ["retrain", "--dataset", str(tmp_path)])
    assert result.exit_code == 1
    assert "no Prefect server answers" in result.output
    assert "fer services up" in result.output
    assert "Traceback" not in result.output


def test_invalid_setting_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FER_HOME", str(tmp_path))
    monkeypatch.setenv("FER_S3_PORT", "not-a-port")
    result = CliRunner().invoke(app, ["services", "status"])
    assert result.exit_code == 1
    assert "FER_S3_PORT" in result.output and "Traceback" not in result.output


def test_profile_options_override_the_profile_and_bad_profiles_are_named() -> None:
    from model.errors import ConfigError
    from model.training.config import TrainConfig

    _train_config = TrainConfig.from_profile

    cpu = _train_config("cpu", epochs=3, batch_size=None)
    assert cpu.epochs == 3
    assert cpu.model_dump(exclude={"epochs"}) == TrainConfig.profile("cpu").model_dump(
        exclude={"epochs"}
    )
    assert _train_config("quick") == TrainConfig.profile("quick")
    assert _train_config("gpu").batch_size == 512
    with pytest.raises(ConfigError, match="unknown --profile 'huge'; choose quick, cpu or gpu"):
        _train_config("huge")


def test_the_retrain_flow_trains_the_nightly_cpu_recipe_by_default() -> None:
    import inspect

    from flows.retrain import retrain
    from model.training.config import TrainConfig

    default = inspect.signature(retrain.fn).parameters["train_config"].default
    assert default == TrainConfig.profile("cpu")
    assert default.time_budget_minutes is not None and default.time_budget_minutes < 60


def test_worker_and_deploy_options_are_checked_before_prefect_is_contacted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from infra.services import free_port

    monkeypatch.setenv("FER_HOME", str(tmp_path))
    monkeypatch.setenv("FER_PREFECT_PORT", str(free_port()))  # nothing listens there
    broken = tmp_path / "template.json"
    broken.write_text("{not json")
    result = CliRunner().invoke(app, ["worker", "--base-job-template", str(broken)])
    assert result.exit_code == 1
    assert f"{broken} is not JSON" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["deploy", "--profile", "quick"])
    assert result.exit_code == 1
    assert "--profile must be cpu or gpu, not 'quick'" in result.output


def test_the_gate_options_written_once_reach_a_command_as_one_gate_config() -> None:
    from flows.cli.common import with_gate_options
    from model.evaluation.gate import GateConfig

    received: list[GateConfig] = []
    probe = typer.Typer()

    @probe.command()
    @with_gate_options
    def gated(name: str = "x", *, gate: GateConfig) -> None:
        received.append(gate)

    result = CliRunner().invoke(probe, ["--min-accuracy", "0.5", "--max-regression", "0.2"])
    assert result.exit_code == 0, result.output
    assert received == [GateConfig(min_accuracy=0.5, max_regression=0.2)]
    assert CliRunner().invoke(probe, []).exit_code == 0
    assert received[-1] == GateConfig()
    out_of_range = CliRunner().invoke(probe, ["--min-class-recall", "2"])
    assert out_of_range.exit_code == 2 and "min-class-recall" in out_of_range.output
    for command in ("retrain", "up", "models import"):
        usage = CliRunner().invoke(app, [*command.split(), "--help"]).output
        assert all(f"--{name.replace('_', '-')}" in usage for name in GATE_OPTION_NAMES)


GATE_OPTION_NAMES = ("min_accuracy", "min_macro_f1", "min_class_recall", "max_regression")
