"""Finding a folder by what it is for (SPECIAL-USE attributes, RFC 6154, or usual names)."""

from __future__ import annotations

import logging

from .connection import ImapConnection

log = logging.getLogger(__name__)

# names tried when the server does not mark folders with SPECIAL-USE attributes (RFC 6154)
FALLBACK_NAMES: dict[str, tuple[str, ...]] = {
    "\\Sent": ("Sent", "Sent Items", "Sent Messages", "INBOX/Sent", "INBOX.Sent"),
    "\\Drafts": ("Drafts", "INBOX/Drafts", "INBOX.Drafts"),
    "\\Trash": ("Trash", "Deleted Items", "INBOX/Trash", "INBOX.Trash"),
    "\\Junk": ("Junk", "Spam", "INBOX/Junk", "INBOX.Junk"),
    "\\Archive": ("Archive", "INBOX/Archive", "INBOX.Archive"),
}


async def special_use_folder(conn: ImapConnection, flag: str, *, fallback: bool = False) -> str | None:
    """The selectable folder carrying the attribute `flag` (e.g. "\\Sent"); with `fallback`,
    else one with a usual name for it; else None."""
    entries = [e for e in await conn.list_folders() if "\\NOSELECT" not in _upper(e.flags)]
    for entry in entries:
        if flag.upper() in _upper(entry.flags):
            return entry.name
    if not fallback:
        return None
    by_name = {e.name.lower(): e.name for e in entries}
    fallbacks = {k.upper(): v for k, v in FALLBACK_NAMES.items()}.get(flag.upper(), ())
    for name in fallbacks:
        if name.lower() in by_name:
            log.debug("no %s attribute; using folder %r", flag, by_name[name.lower()])
            return by_name[name.lower()]
    return None


def _upper(flags: frozenset[str]) -> set[str]:
    return {f.upper() for f in flags}
