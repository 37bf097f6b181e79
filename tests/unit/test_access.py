"""Access control (FER_SERVE_AUTH), the refusal to serve open beyond loopback, and JSON logs."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from flows.cli import app
from flows.cli.serve import check_exposure
from model.errors import ConfigError
from model.logs import log_formatter
from model.settings import Settings
from serving.access import Credentials, client_header, is_loopback, parse_auth
from serving.api import REQUEST_ID, RequestIdFilter

pytestmark = pytest.mark.unit


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_one_value_without_colon_is_a_token_accepted_as_bearer_or_basic_password() -> None:
    credentials = parse_auth(" s3cret ")
    assert credentials == Credentials(token="s3cret")
    assert credentials.allow("Bearer s3cret") and credentials.allow("bearer  s3cret")
    assert credentials.allow(_basic("whoever", "s3cret"))
    for refused in (None, "", "Bearer s3cre", "Bearer", _basic("s3cret", "x"), "Token s3cret"):
        assert not credentials.allow(refused), refused


def test_user_password_pairs_accept_each_user_with_their_own_password() -> None:
    credentials = parse_auth("alice:wonder:land,bob:builder")  # a password may hold ':'
    assert credentials.users == {"alice": "wonder:land", "bob": "builder"}
    assert credentials.allow(_basic("alice", "wonder:land"))
    assert credentials.allow(_basic("bob", "builder"))
    for refused in (
        _basic("alice", "builder"),
        _basic("carol", "builder"),
        "Bearer builder",  # no token in this mode
        "Basic not-base64!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
    ):
        assert not credentials.allow(refused), refused


@pytest.mark.parametrize("value", ["", " , ", "alice:pw,bob", "alice:", ":pw", "a:b,:c"])
def test_a_malformed_setting_is_refused_with_the_fix(value: str) -> None:
    with pytest.raises(ConfigError, match="FER_SERVE_AUTH"):
        parse_auth(value)


def test_the_client_header_is_what_the_server_accepts() -> None:
    for value in ("tok", "alice:pw,bob:pw2"):
        assert parse_auth(value).allow(client_header(value)), value
    assert client_header("tok") == "Bearer tok"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serving_beyond_loopback_needs_credentials_or_public() -> None:
    open_wide = Settings(serve_host="0.0.0.0")
    with pytest.raises(ConfigError, match="FER_SERVE_AUTH.*--public"):
        check_exposure(open_wide, public=False)
    check_exposure(open_wide, public=True)
    check_exposure(Settings(serve_host="0.0.0.0", serve_auth=SecretStr("tok")), public=False)
    check_exposure(Settings(serve_host="127.0.0.1"), public=False)


def test_fer_serve_refuses_an_open_public_host_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FER_HOME", str(tmp_path))
    monkeypatch.setenv("FER_SERVE_HOST", "0.0.0.0")
    monkeypatch.delenv("FER_SERVE_AUTH", raising=False)
    for command in (["serve"], ["up"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1, result.output
        assert "FER_SERVE_AUTH is unset" in result.output and "--public" in result.output
        assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # no service was started, nothing written


def test_json_log_lines_carry_the_request_id() -> None:
    record = logging.LogRecord("serving.api", logging.INFO, __file__, 1, "%s done", ("x",), None)
    token = REQUEST_ID.set("req-7")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(log_formatter("json", request_id=True).format(record))
    assert line["message"] == "x done" and line["request_id"] == "req-7"
    assert line["level"] == "INFO" and line["logger"] == "serving.api" and "time" in line
    text = log_formatter("text", request_id=True).format(record)
    assert "[req-7]: x done" in text
