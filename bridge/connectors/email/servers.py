"""Server settings of one email login: parsing `host:port:security` and the domain defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...network import LoginFailed
from .security import SECURITY_MODES, SECURITY_MODES_TEXT

_DEFAULT_PORTS = {("imap", "tls"): 993, ("imap", "starttls"): 143, ("imap", "plain"): 143,
                  ("smtp", "tls"): 465, ("smtp", "starttls"): 587, ("smtp", "plain"): 587}


@dataclass(frozen=True, slots=True)
class ServerSpec:
    host: str
    port: int
    security: str

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "security": self.security}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerSpec:
        return cls(str(data["host"]), int(data["port"]), str(data["security"]))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}:{self.security}"


def default_spec(kind: str, domain: str) -> ServerSpec:
    return ServerSpec(f"{kind}.{domain}", _DEFAULT_PORTS[(kind, "tls")], "tls")


def parse_spec(kind: str, value: str) -> ServerSpec:
    """`host`, `host:port` or `host:port:security` (security: tls, starttls or plain)."""
    parts = value.strip().split(":")
    if not parts[0] or len(parts) > 3:
        raise LoginFailed(f"{kind.upper()} server must look like host:port:security, e.g. "
                          f"{kind}.example.org:{_DEFAULT_PORTS[(kind, 'tls')]}:tls", fields=(kind,))
    security = parts[2].lower() if len(parts) == 3 else "tls"
    if security not in SECURITY_MODES:
        raise LoginFailed(f"{kind.upper()} security must be one of {SECURITY_MODES_TEXT}",
                          fields=(kind,))
    try:
        port = int(parts[1]) if len(parts) >= 2 else _DEFAULT_PORTS[(kind, security)]
    except ValueError:
        raise LoginFailed(f"{kind.upper()} port must be a number", fields=(kind,)) from None
    if not 0 < port < 65536:
        raise LoginFailed(f"{kind.upper()} port must be between 1 and 65535", fields=(kind,))
    return ServerSpec(parts[0], port, security)
