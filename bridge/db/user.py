from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Database


@dataclass(slots=True)
class UserRow:
    mxid: str
    management_room: str | None


class UserTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, mxid: str) -> UserRow | None:
        row = await self.db.fetchrow("SELECT mxid, management_room FROM bridge_user WHERE mxid=$1", mxid)
        return UserRow(row["mxid"], row["management_room"]) if row else None

    async def by_management_room(self, room_id: str) -> UserRow | None:
        row = await self.db.fetchrow(
            "SELECT mxid, management_room FROM bridge_user WHERE management_room=$1", room_id
        )
        return UserRow(row["mxid"], row["management_room"]) if row else None

    async def upsert(self, user: UserRow) -> None:
        await self.db.execute(
            """INSERT INTO bridge_user (mxid, management_room) VALUES ($1, $2)
               ON CONFLICT (mxid) DO UPDATE SET management_room=excluded.management_room""",
            user.mxid,
            user.management_room,
        )
