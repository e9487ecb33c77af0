"""Typed errors raised by devstack."""

from __future__ import annotations


class DevstackError(Exception):
    """Base class: something about the local server stack went wrong."""


class MissingBinaryError(DevstackError):
    """A server binary or venv is not installed; the message says how to fix it."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not installed: run devstack/install.sh (as root)")
        self.what = what


class ServerStartError(DevstackError):
    """A server did not come up; carries the tail of its log."""

    def __init__(self, name: str, reason: str, log_tail: str = "") -> None:
        msg = f"{name} failed to start: {reason}"
        if log_tail:
            msg += f"\n--- last log lines ---\n{log_tail}"
        super().__init__(msg)
        self.name = name
        self.reason = reason
        self.log_tail = log_tail


class MatrixAdminError(DevstackError):
    """A Synapse admin/client API call failed."""

    def __init__(self, status: int, errcode: str, error: str) -> None:
        super().__init__(f"Synapse answered {status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
