"""Outbound mail: Matrix content -> safe email -> SMTP submission."""

from __future__ import annotations

from ..html_text import html_to_text
from .body import MailBody, matrix_to_mail_body
from .compose import (
    ALLOWED_EXTRA_HEADERS,
    OutgoingAttachment,
    OutgoingMail,
    compose,
    normalise_filename,
)
from .errors import ComposeError, HeaderInjection, InvalidHeader, UnsupportedContent
from .header_text import clean_display_name, clean_header_text
from .message_ids import (
    event_id_hash,
    event_id_hash_from_message_id,
    is_message_id_for_event,
    message_id_for_event,
    message_ids_from_header,
)
from .subjects import reply_subject, strip_reply_prefixes, subject_from_first_line

__all__ = [
    "ALLOWED_EXTRA_HEADERS",
    "ComposeError",
    "HeaderInjection",
    "InvalidHeader",
    "MailBody",
    "OutgoingAttachment",
    "OutgoingMail",
    "UnsupportedContent",
    "clean_display_name",
    "clean_header_text",
    "compose",
    "event_id_hash",
    "event_id_hash_from_message_id",
    "html_to_text",
    "is_message_id_for_event",
    "matrix_to_mail_body",
    "message_id_for_event",
    "message_ids_from_header",
    "normalise_filename",
    "reply_subject",
    "strip_reply_prefixes",
    "subject_from_first_line",
]
