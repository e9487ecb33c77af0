"""Small, failure-tolerant accessors for stdlib MIME parts."""

from __future__ import annotations

import binascii
from email import policy
from email.generator import BytesGenerator
from email.message import Message
from io import BytesIO
import quopri
import re

from .headers import first


def serialise(part: Message) -> bytes:
    """Bytes of an embedded message, as close to the original as the stdlib allows."""
    buffer = BytesIO()
    try:
        BytesGenerator(buffer, mangle_from_=False, policy=policy.compat32).flatten(part)
    except (ValueError, TypeError, LookupError, UnicodeError):
        buffer = BytesIO()
        BytesGenerator(buffer, mangle_from_=False, policy=policy.default.clone(utf8=True)).flatten(
            part  # type: ignore[arg-type]
        )
    return buffer.getvalue()


def content_type(part: Message) -> str:
    try:
        ctype = part.get_content_type()
    except (ValueError, IndexError, AttributeError):
        ctype = "application/octet-stream"
    return ctype.lower()


def disposition(raw: dict[str, list[str]]) -> str:
    """`attachment`, `inline` or "" from the raw Content-Disposition value."""
    value = (first(raw, "content-disposition") or "").strip().lower()
    return re.split(r"[;\s]", value, maxsplit=1)[0] if value else ""


def decoded_payload(part: Message) -> bytes:
    """The transfer-decoded body of a leaf part (best effort on broken encodings)."""
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError):
        data = None
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""


def transfer_decode(data: bytes, encoding: str) -> bytes:
    """Undo a base64 or quoted-printable transfer encoding, leniently."""
    if encoding == "quoted-printable":
        return quopri.decodestring(data)
    cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    cleaned += b"=" * (-len(cleaned) % 4)
    try:
        return binascii.a2b_base64(cleaned)
    except binascii.Error:
        return data
