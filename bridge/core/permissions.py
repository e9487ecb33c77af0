"""Permission levels from the `bridge.permissions` map (user ID, server name or `*`)."""

from __future__ import annotations

from enum import IntEnum


class Level(IntEnum):
    NONE = 0
    RELAY = 10
    USER = 50
    ADMIN = 100


def level_for(mxid: str, permissions: dict[str, str]) -> Level:
    """The most specific entry wins: the user ID, then the server name, then `*`."""
    server = mxid.split(":", 1)[1] if ":" in mxid else ""
    for key in (mxid, server, "*"):
        if key in permissions:
            return Level[str(permissions[key]).upper()]
    return Level.NONE
