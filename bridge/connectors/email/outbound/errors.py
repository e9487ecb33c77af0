"""Errors raised while turning Matrix content into an outgoing email."""

from __future__ import annotations


class ComposeError(ValueError):
    """A mail that cannot be built; `reason` is safe to show to the Matrix user."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class HeaderInjection(ComposeError):
    """A header value would contain a line break or NUL, directly or after RFC 2047 decoding."""


class InvalidHeader(ComposeError):
    """A header value or header name that is not allowed in an outgoing mail."""


class UnsupportedContent(ComposeError):
    """Matrix content this module cannot turn into a mail body (e.g. an image event)."""
