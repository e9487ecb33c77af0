"""Which rooms are encrypted, and with which settings: the state the crypto layer asks about.

Implements mautrix's crypto `StateStore` interface. A room's `m.room.encryption` content is cached
in memory; on a miss (e.g. after a restart) it is read from the homeserver once. Encryption can
only be switched on in a room, never off, so a cached "encrypted" never goes stale.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import logging
from typing import Any, cast

from mautrix.appservice import IntentAPI
from mautrix.crypto import StateStore
from mautrix.errors import MForbidden, MNotFound
from mautrix.types import JSON, EventType, RoomEncryptionStateEventContent, RoomID, UserID

log = logging.getLogger("letterbox.crypto.state")

SharedRooms = Callable[[UserID], Awaitable[list[RoomID]]]


class RoomEncryptionState(StateStore):
    """Encryption settings per room (cached), and the bridge rooms a user shares with the bot."""

    def __init__(self, bot: Callable[[], IntentAPI], shared_rooms: SharedRooms) -> None:
        self._bot = bot
        self._shared_rooms = shared_rooms
        self._rooms: dict[RoomID, RoomEncryptionStateEventContent | None] = {}

    def remember(self, room_id: RoomID,
                 content: RoomEncryptionStateEventContent | dict[str, Any] | None) -> None:
        """Record a room's encryption state event (from a transaction or a room we created)."""
        if isinstance(content, dict):
            content = RoomEncryptionStateEventContent.deserialize(cast(JSON, content))
        if content is None and self._rooms.get(room_id) is not None:
            return  # encryption cannot be turned off again
        self._rooms[room_id] = content

    async def get_encryption_info(self, room_id: RoomID) -> RoomEncryptionStateEventContent | None:
        if room_id in self._rooms:
            return self._rooms[room_id]
        try:
            content = await self._bot().get_state_event(room_id, EventType.ROOM_ENCRYPTION)
        except MNotFound:
            content = None
        except MForbidden:
            return None  # not in the room (yet): ask again later
        if content is not None and not isinstance(content, RoomEncryptionStateEventContent):
            content = RoomEncryptionStateEventContent.deserialize(cast(JSON, content.serialize()))
        if content is not None and not content.algorithm:
            content = None  # an empty/invalid state event does not encrypt the room
        self.remember(room_id, content)
        return self._rooms.get(room_id)

    async def is_encrypted(self, room_id: RoomID) -> bool:
        return await self.get_encryption_info(room_id) is not None

    async def find_shared_rooms(self, user_id: UserID) -> list[RoomID]:
        """The encrypted bridge rooms of `user_id`: when their devices change, the outbound
        sessions there end, so a new device gets the next session's key."""
        return [r for r in await self._shared_rooms(user_id) if await self.is_encrypted(r)]
