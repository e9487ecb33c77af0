"""Rooms of a logged-out account that the user kept: a message there is answered, never dropped."""

from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Database


@dataclass(frozen=True, slots=True)
class RetiredPortalRow:
    room_id: str
    user_mxid: str
    remote_name: str


class RetiredPortalTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, room_id: str) -> RetiredPortalRow | None:
        row = await self.db.fetchrow(
            "SELECT room_id, user_mxid, remote_name FROM retired_portal WHERE room_id=$1", room_id
        )
        return RetiredPortalRow(row["room_id"], row["user_mxid"], row["remote_name"]) if row else None

    async def add(self, row: RetiredPortalRow) -> None:
        await self.db.execute(
            """INSERT INTO retired_portal (room_id, user_mxid, remote_name) VALUES ($1, $2, $3)
               ON CONFLICT (room_id) DO UPDATE SET user_mxid=excluded.user_mxid,
               remote_name=excluded.remote_name""",
            row.room_id, row.user_mxid, row.remote_name,
        )

    async def remove(self, room_id: str) -> None:
        await self.db.execute("DELETE FROM retired_portal WHERE room_id=$1", room_id)
