"""Errors a connector raises towards the core; `reason` is shown to the Matrix user."""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class; `reason` is a short user-facing sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LoginFailed(ConnectorError):
    """A login step failed; the user may retry the step (`retry_step` true) or start over."""

    def __init__(self, reason: str, *, retry_step: bool = True) -> None:
        super().__init__(reason)
        self.retry_step = retry_step


class ActionNotSupported(ConnectorError):
    """The network cannot do what was asked (e.g. unsend an email)."""


class ConfigError(Exception):
    """An invalid or missing option; the message names the key (one line for the operator)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config error: {key}: {message}")
        self.key = key
