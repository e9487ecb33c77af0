"""Resource caps for parsing received mail, and the error raised when a mail breaks one."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.network.errors import ConnectorError


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Caps applied to one received message before and while it is parsed."""

    max_bytes: int = 25 * 1024 * 1024
    max_mime_depth: int = 20
    max_parts: int = 200
    max_header_bytes: int = 256 * 1024
    time_budget_s: float = 5.0


def too_large(size: int, limits: ParseLimits) -> str:
    return f"the message is {size // 1024} KiB, more than the {limits.max_bytes // 1024} KiB limit"


class MailRejected(ConnectorError):
    """A received mail that could not be parsed or broke a cap; `reason` is shown to the user."""


class ParserUnavailable(ConnectorError):
    """The parser worker could not be started: a fault of this machine, not of the mail.

    Callers should retry the mail later rather than reject it.
    """
