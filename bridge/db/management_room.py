"""Rooms where a user talks to the bridge bot without a prefix: every private chat with the bot."""

from __future__ import annotations

from mautrix.util.async_db import Database


class ManagementRoomTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def owner(self, room_id: str) -> str | None:
        owner: str | None = await self.db.fetchval(
            "SELECT user_mxid FROM management_room WHERE room_id=$1", room_id)
        return owner

    async def for_user(self, mxid: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT room_id FROM management_room WHERE user_mxid=$1 ORDER BY added_at DESC", mxid
        )
        return [r["room_id"] for r in rows]

    async def add(self, room_id: str, mxid: str, added_at: int) -> None:
        await self.db.execute(
            """INSERT INTO management_room (room_id, user_mxid, added_at) VALUES ($1, $2, $3)
               ON CONFLICT (room_id) DO UPDATE SET user_mxid=excluded.user_mxid,
               added_at=excluded.added_at""",
            room_id, mxid, added_at,
        )

    async def remove(self, room_id: str) -> None:
        await self.db.execute("DELETE FROM management_room WHERE room_id=$1", room_id)
