"""The email connector: IMAP in, SMTP out, one Matrix room per set of correspondents."""

from __future__ import annotations

from .connector import EmailConnector

__all__ = ["EmailConnector"]
