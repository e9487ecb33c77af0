"""Decoding header values of received mail: encoded words, 8-bit bytes, ids, addresses, dates."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
import re

from ..addresses import InvalidAddress, Mailbox, address_key, normalise_address, parse_mailbox_list
from .charset import decode_bytes, fix_surrogates
from .safe_text import safe_display_name, strip_bidi_controls

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?]*)\?=")
_BETWEEN_WORDS = re.compile(r"^[ \t\r\n]*$")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_MSG_ID = re.compile(r"<([^<>\s]+)>")
_BARE_ID = re.compile(r"[^<>\s@]+@[^<>\s@]+")
_Q_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def _decode_word_payload(encoding: str, payload: str) -> bytes:
    if encoding in "Bb":
        cleaned = re.sub(r"[^A-Za-z0-9+/]", "", payload)
        cleaned += "=" * (-len(cleaned) % 4)
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            return payload.encode("ascii", "replace")
    raw = payload.replace("_", " ").encode("utf-8", "surrogateescape")
    return _Q_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words (lenient: unknown charsets, bad padding, split characters).

    Adjacent words in the same charset are joined before decoding so a multi-byte character split
    across two words survives; whitespace between encoded words is dropped as the RFC says.
    """
    out: list[str] = []
    pending: bytearray = bytearray()
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending_charset is not None:
            out.append(decode_bytes(bytes(pending), pending_charset))
        pending = bytearray()
        pending_charset = None

    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        if not (pending_charset is not None and _BETWEEN_WORDS.match(gap)):
            flush()
            out.append(gap)
        charset = match.group(1).split("*", 1)[0]
        data = _decode_word_payload(match.group(2), match.group(3))
        if pending_charset is not None and pending_charset.lower() != charset.lower():
            flush()
        pending_charset = charset
        pending += data
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def clean_text(value: str) -> str:
    """One line of display text: no CR/LF/NUL or other controls, whitespace collapsed."""
    value = _FOLD.sub("", value)
    value = value.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    value = _CONTROL.sub(" ", value)
    return re.sub(r" {2,}", " ", value).strip()


def header_text(value: str | None, hint: str | None = None) -> str:
    """A raw header value as clean display text (8-bit repaired, encoded words decoded).

    `hint` is a charset declared elsewhere in the mail, used for raw 8-bit bytes.
    """
    if value is None:
        return ""
    value = fix_surrogates(_FOLD.sub("", str(value)), hint)
    if "\x1b" in value and value.isascii():
        value = decode_bytes(value.encode("ascii"), "iso-2022-jp")
    return clean_text(decode_words(value))


_MAX_SUBJECT_DECODE_ROUNDS = 4


def subject_text(value: str | None, hint: str | None = None) -> str:
    """The subject as one clean line that stays the same however often it is decoded again.

    Encoded words nested inside encoded words would turn into new text (even a line break) when a
    reply quotes the subject, so they are decoded here until nothing changes, once, on the way in;
    whatever still looks like an encoded word after that is defused. Bidi controls are removed.
    """
    text = header_text(value, hint)
    for _ in range(_MAX_SUBJECT_DECODE_ROUNDS):
        if not _ENCODED_WORD.search(text):
            break
        text = clean_text(decode_words(text))
    if _ENCODED_WORD.search(text):
        text = text.replace("=?", "= ?")
    return strip_bidi_controls(text)


def raw_headers(msg: Message) -> dict[str, list[str]]:
    """Header values without the stdlib's structured parsing, which can raise on bad input."""
    found: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        found.setdefault(name.strip().lower(), []).append(str(value))
    return found


def first(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def normalise_message_id(value: str | None) -> str | None:
    """The first `<id>` of a header value, or a bare `id@host` wrapped in angle brackets."""
    if not value:
        return None
    value = fix_surrogates(_FOLD.sub("", value))
    match = _MSG_ID.search(value)
    if match:
        found = match.group(1)
    else:
        bare = _BARE_ID.search(value)
        if bare is None:
            return None
        found = bare.group(0)
    if _CONTROL.search(found) or len(found) > 995:
        return None
    return f"<{found}>"


def message_id_list(values: list[str] | None) -> list[str]:
    """All ids in References-style headers, in order, without duplicates."""
    ids: list[str] = []
    for value in values or []:
        for match in _MSG_ID.finditer(fix_surrogates(value)):
            found = f"<{match.group(1)}>"
            if found not in ids and not _CONTROL.search(found) and len(found) <= 997:
                ids.append(found)
    return ids


def mailboxes(values: list[str] | None, hint: str | None = None) -> list[Mailbox]:
    """Lenient parse of address headers; display names are decoded after splitting.

    Splitting happens on the still-encoded text: an encoded word cannot hide a comma, while a
    decoded display name may contain one.
    """
    if not values:
        return []
    unfolded = [
        fix_surrogates(_FOLD.sub("", v), hint).replace("\r", " ").replace("\n", " ") for v in values
    ]
    try:
        found = parse_mailbox_list(unfolded)
    except RecursionError:
        # The stdlib address parser recurses once per token; a hostile header can exhaust the stack.
        found = _bare_mailboxes(unfolded)
    return [Mailbox(addr=m.addr, name=safe_display_name(header_text(m.name, hint), m.addr))
            for m in found]


_BARE_ADDRESS = re.compile(r"[^\s<>,;:\"()\[\]]+@[^\s<>,;:\"()\[\]]+")


def _bare_mailboxes(values: list[str]) -> list[Mailbox]:
    found: list[Mailbox] = []
    seen: set[str] = set()
    for value in values:
        for candidate in _BARE_ADDRESS.findall(value):
            try:
                addr = normalise_address(candidate)
            except InvalidAddress:
                continue
            if address_key(addr) not in seen:
                seen.add(address_key(addr))
                found.append(Mailbox(addr=addr))
    return found


def parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(clean_text(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def list_id(value: str | None) -> str | None:
    if not value:
        return None
    text = header_text(value)
    match = re.search(r"<([^<>\s]+)>", text)
    found = match.group(1) if match else text.strip()
    return found.lower() or None
