"""Access control for the page and the API (``FER_SERVE_AUTH``).

The setting is either one bearer token or comma-separated ``user:password`` pairs. Programs
send ``Authorization: Bearer <token>`` or HTTP Basic; browsers get the Basic prompt, where a
token is accepted as the password (any user name), so the page works in both modes. The
probes and ``/metrics`` stay open: the cluster's kubelet and Prometheus call them without
credentials, and they carry no user data.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
from dataclasses import dataclass, field

from model.errors import ConfigError

#: Paths answered without credentials.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: The challenge of a refused request: browsers show their login prompt for it.
CHALLENGE = 'Basic realm="fer", charset="UTF-8"'


@dataclass(frozen=True)
class Credentials:
    """Who may use the server: one bearer token, or users with their passwords."""

    token: str | None = None
    users: dict[str, str] = field(default_factory=dict)

    def allow(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries valid credentials."""
        scheme, _, value = (authorization or "").strip().partition(" ")
        if scheme.lower() == "bearer" and self.token is not None:
            return _same(value.strip(), self.token)
        if scheme.lower() == "basic":
            user, password = _basic(value.strip())
            if user is None or password is None:
                return False
            if self.token is not None:
                return _same(password, self.token)
            expected = self.users.get(user)
            return expected is not None and _same(password, expected)
        return False


def parse_auth(value: str) -> Credentials:
    """Read ``FER_SERVE_AUTH``.

    Raises:
        ConfigError: the value is empty, or an entry is not ``user:password``.
    """
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        raise ConfigError(
            "FER_SERVE_AUTH is empty; set a bearer token or user:password pairs, or unset it"
        )
    if len(entries) == 1 and ":" not in entries[0]:
        return Credentials(token=entries[0])
    users: dict[str, str] = {}
    for entry in entries:
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise ConfigError(
                "FER_SERVE_AUTH: with several entries, each must be user:password (an entry "
                "has no user or no password); a single value without ':' is a bearer token"
            )
        users[user] = password
    return Credentials(users=users)


def client_header(value: str) -> str:
    """The ``Authorization`` header a client sends for a ``FER_SERVE_AUTH`` value.

    A token as ``Bearer``; with user:password pairs, the first pair as HTTP Basic.
    """
    credentials = parse_auth(value)
    if credentials.token is not None:
        return f"Bearer {credentials.token}"
    user, password = next(iter(credentials.users.items()))
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _basic(value: str) -> tuple[str | None, str | None]:
    """User and password of an HTTP Basic credential; ``None`` when it is malformed."""
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison, so timing does not reveal how much of a secret matched."""
    return secrets.compare_digest(given.encode(), expected.encode())
