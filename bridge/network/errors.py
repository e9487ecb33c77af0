"""Errors a connector raises towards the core; `reason` is shown to the Matrix user."""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class; `reason` is a short user-facing sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LoginFailed(ConnectorError):
    """A login step failed; the user may retry the step (`retry_step` true) or start over.

    `fields` names the answers that were wrong: only those are asked again. Without it, the
    step's secrets are asked again (or all of its fields when it has no secret).
    """

    def __init__(self, reason: str, *, retry_step: bool = True,
                 fields: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.retry_step = retry_step
        self.fields = fields


class ActionNotSupported(ConnectorError):
    """The network cannot do what was asked (e.g. unsend an email)."""


class ConfigError(Exception):
    """An invalid or missing option; the message names the key (one line for the operator)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config error: {key}: {message}")
        self.key = key


def is_infrastructure_error(exc: BaseException) -> bool:
    """Whether `exc` says the homeserver or the database is unreachable or overloaded, rather
    than that the thing being handled is at fault. Such failures hold a queue and are retried
    without counting against the item; any other failure counts towards giving the item up."""
    import sqlite3

    from aiohttp import ClientConnectionError
    from mautrix.errors import MatrixConnectionError, MatrixRequestError

    if isinstance(exc, MatrixRequestError):
        return exc.http_status >= 500 or exc.http_status == 429
    if isinstance(exc, (MatrixConnectionError, ClientConnectionError, OSError, TimeoutError)):
        return True
    if isinstance(exc, sqlite3.OperationalError):  # locked, disk I/O, cannot open
        return True
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - PostgreSQL support not installed
        return False
    return isinstance(exc, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                            asyncpg.exceptions.OperatorInterventionError,
                            asyncpg.exceptions.InsufficientResourcesError))
