"""IMAP account settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
import ipaddress
import ssl

from ..sasl import BEARER_MECHANISMS, BearerSource
from ..security import SECURITY_MODES, SECURITY_MODES_TEXT
from .errors import ImapConfigError


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ImapAccount:
    """Where and how to log in to one mailbox.

    `security`: "tls" (implicit TLS, usually port 993), "starttls" (usually 143) or "plain"
    (no encryption, only accepted for a loopback host). Certificates are always verified,
    against `ca_file` when given, else against the system trust store. `timeout` (seconds)
    bounds connecting and every single command. With `bearer`, the login is OAuth 2.0 (SASL
    OAUTHBEARER or XOAUTH2, the first of `bearer_mechanisms` the server offers) and `password`
    is unused.
    """

    host: str
    port: int
    security: str
    username: str
    password: str = field(repr=False)
    ca_file: str | None = None
    timeout: float = 30.0
    bearer: BearerSource | None = field(default=None, repr=False, compare=False)
    bearer_mechanisms: tuple[str, ...] = BEARER_MECHANISMS

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ImapConfigError(
                f"unknown IMAP security mode {self.security!r} (use one of {SECURITY_MODES_TEXT})"
            )
        if self.security == "plain" and not is_loopback(self.host):
            raise ImapConfigError(
                "unencrypted IMAP is only allowed to this machine; use tls or starttls"
            )
        if not 0 < self.port < 65536:
            raise ImapConfigError(f"invalid IMAP port {self.port}")
        if self.timeout <= 0:
            raise ImapConfigError("the IMAP timeout must be positive")

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context (hostname and chain checked), shared by every session
        with the same trust: loading the system trust store costs a few hundred KiB each time."""
        return _verifying_context(self.ca_file)


@lru_cache(maxsize=8)
def _verifying_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)
