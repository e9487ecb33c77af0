"""Received email -> Matrix events: parsing with caps, sanitising, quote stripping, conversion.

Pure conversion: nothing here talks to the network or the database. Typical use::

    parsed = await parse_email(raw, ParseLimits())          # raises MailRejected
    converted = convert_email(parsed, include_subject=True)  # or convert_rejected(raw, reason)
    # upload converted.uploads[key].data for each key, then send
    # substitute_mxc(draft.content, {key: real_mxc_url, ...}) for each draft in converted.events
"""

from __future__ import annotations

from .convert import (
    PLACEHOLDER_PREFIX,
    ConvertedEmail,
    EventDraft,
    convert_email,
    convert_rejected,
    substitute_mxc,
)
from .limits import MailRejected, ParseLimits, ParserUnavailable
from .model import Attachment, DeliveryReport, ParsedEmail, RecipientStatus
from .parse import parse_email, parse_email_sync
from .pool import ParserPool, close_default_pool

__all__ = [
    "PLACEHOLDER_PREFIX",
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
    "substitute_mxc",
]
