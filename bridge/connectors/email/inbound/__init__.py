"""Received email -> Matrix events: parsing with caps, sanitising, quote stripping, conversion.

Pure conversion: nothing here talks to the network or the database. Typical use::

    parsed = await parse_email(raw, ParseLimits())          # raises MailRejected
    converted = convert_email(parsed, include_subject=True)  # or convert_rejected(raw, reason)
    # each draft of converted.events refers to converted.uploads through placeholder URLs
    # (bridge/network/placeholders.py); the core uploads them and substitutes the real URLs
"""

from __future__ import annotations

from .convert import ConvertedEmail, EventDraft, convert_email, convert_rejected
from .limits import MailRejected, ParseLimits, ParserUnavailable
from .model import Attachment, DeliveryReport, ParsedEmail, RecipientStatus
from .parse import parse_email, parse_email_sync
from .pool import ParserPool, close_default_pool

__all__ = [
    "Attachment",
    "ConvertedEmail",
    "DeliveryReport",
    "EventDraft",
    "MailRejected",
    "ParseLimits",
    "ParsedEmail",
    "ParserPool",
    "ParserUnavailable",
    "RecipientStatus",
    "close_default_pool",
    "convert_email",
    "convert_rejected",
    "parse_email",
    "parse_email_sync",
]
