from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Connection, Database

from bridge.db.rows import Record

from .rows import connection

_COLUMNS = "receiver, portal_id, id, part_id, mxid, room_id, sender_id, timestamp, thread_root"


@dataclass(slots=True)
class MessageRow:
    """One Matrix event of a remote message (a message may have several parts)."""

    receiver: str
    portal_id: str
    id: str
    part_id: str
    mxid: str
    room_id: str
    sender_id: str
    timestamp: int
    thread_root: str | None

    @classmethod
    def from_record(cls, row: Record) -> MessageRow:
        return cls(*(row[c] for c in _COLUMNS.split(", ")))


class MessageTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, m: MessageRow) -> None:
        async with connection(self.db) as conn:
            await insert_message(conn, m)

    async def parts(self, receiver: str, message_id: str) -> list[MessageRow]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM message WHERE receiver=$1 AND id=$2", receiver, message_id,
        )
        return [MessageRow.from_record(r) for r in rows]

    async def placement(self, receiver: str, message_id: str) -> tuple[str, bool] | None:
        """The portal a message was (or is being) posted in, and whether every part is there;
        None for a message never posted."""
        row = await self.db.fetchrow(
            """SELECT portal_id, false AS complete FROM message_part_pending WHERE receiver=$1 AND id=$2
               UNION ALL
               SELECT portal_id, true AS complete FROM message WHERE receiver=$1 AND id=$2
               ORDER BY complete LIMIT 1""",
            receiver, message_id,
        )
        return (row["portal_id"], bool(row["complete"])) if row else None

    async def first_part(self, receiver: str, message_id: str) -> MessageRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM message WHERE receiver=$1 AND id=$2 ORDER BY part_id LIMIT 1",
            receiver, message_id,
        )
        return MessageRow.from_record(row) if row else None


    async def by_mxid(self, event_id: str) -> MessageRow | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM message WHERE mxid=$1 LIMIT 1", event_id)
        return MessageRow.from_record(row) if row else None


async def insert_message(conn: Connection, m: MessageRow) -> None:
    await conn.execute(
        f"""INSERT INTO message ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (receiver, id, part_id) DO NOTHING""",
        m.receiver, m.portal_id, m.id, m.part_id, m.mxid, m.room_id, m.sender_id,
        m.timestamp, m.thread_root,
    )
