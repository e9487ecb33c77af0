"""Message-ID values: deterministic ids for Matrix events and validation of ids from other mail."""

from __future__ import annotations

import base64
from collections.abc import Iterable
import hashlib
import re

from ..addresses import InvalidAddress, normalise_domain
from .errors import HeaderInjection, InvalidHeader

# msg-id as found in the wild: printable ASCII without spaces or angle brackets between < and >.
_MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,250}>")
_OUR_ID = re.compile(r"<lb\.([a-z2-7]{32})@([a-z0-9.\-]+)>")
_HASH_CHARS = 32
MAX_REFERENCES = 20


def event_id_hash(event_id: str) -> str:
    """A 160-bit base32 digest of a Matrix event ID (lower case, no padding)."""
    digest = hashlib.sha256(event_id.encode("utf-8")).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:_HASH_CHARS]


def message_id_for_event(event_id: str, domain: str) -> str:
    """The Message-ID for the mail made from `event_id`: `<lb.HASH@domain>`, always the same."""
    if not event_id:
        raise ValueError("event_id must not be empty")
    try:
        ascii_domain = normalise_domain(domain)
    except InvalidAddress as exc:
        raise InvalidHeader(exc.reason, field="Message-ID") from exc
    if not re.fullmatch(r"[a-z0-9.\-]+", ascii_domain):
        raise InvalidHeader("the mail domain is not a plain host name", field="Message-ID")
    return f"<lb.{event_id_hash(event_id)}@{ascii_domain}>"


def event_id_hash_from_message_id(message_id: str) -> str | None:
    """The event hash inside a Message-ID from `message_id_for_event`, or None if not ours."""
    match = _OUR_ID.fullmatch(message_id.strip())
    return match.group(1) if match else None


def is_message_id_for_event(message_id: str, event_id: str) -> bool:
    return event_id_hash_from_message_id(message_id) == event_id_hash(event_id)


def check_message_id(value: str, field: str) -> str:
    """Return `value` stripped if it is a well-formed `<...>` id; raise otherwise."""
    if re.search(r"[\r\n\x00]", value):
        raise HeaderInjection(f"the {field} contains a line break or NUL character", field=field)
    value = value.strip()
    if not _MSG_ID.fullmatch(value):
        raise InvalidHeader(f"the {field} is not a valid message id", field=field)
    return value


def message_ids_from_header(values: Iterable[str]) -> list[str]:
    """All well-formed `<...>` ids in raw References / In-Reply-To values, in order, no repeats.

    Meant for ids taken from received mail; anything that is not a plain id (comments, junk) is
    skipped, as mail readers do.
    """
    found: list[str] = []
    for value in values:
        for candidate in re.findall(r"<[^<>]*>", value):
            if _MSG_ID.fullmatch(candidate) and candidate not in found:
                found.append(candidate)
    return found


def cap_references(ids: list[str], limit: int = MAX_REFERENCES) -> list[str]:
    """Keep the first id (the thread root) and the newest `limit - 1` ids."""
    if len(ids) <= limit:
        return list(ids)
    return [ids[0], *ids[len(ids) - (limit - 1) :]]
