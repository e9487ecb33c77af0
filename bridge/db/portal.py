from __future__ import annotations

from dataclasses import dataclass, field
import json
from typing import Any

from mautrix.util.async_db import Database

from bridge.db.rows import Record, transaction

_COLUMNS = "id, receiver, mxid, name, topic, is_direct, in_space, metadata"


@dataclass(slots=True)
class PortalRow:
    id: str
    receiver: str
    mxid: str | None = None
    name: str = ""
    topic: str = ""
    is_direct: bool = False
    in_space: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, row: Record) -> PortalRow:
        return cls(
            row["id"], row["receiver"], row["mxid"], row["name"], row["topic"],
            bool(row["is_direct"]), bool(row["in_space"]), json.loads(row["metadata"]),
        )


class PortalTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, portal_id: str, receiver: str) -> PortalRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM portal WHERE id=$1 AND receiver=$2", portal_id, receiver
        )
        return PortalRow.from_record(row) if row else None

    async def by_mxid(self, room_id: str) -> PortalRow | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM portal WHERE mxid=$1", room_id)
        return PortalRow.from_record(row) if row else None

    async def for_receiver(self, receiver: str) -> list[PortalRow]:
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM portal WHERE receiver=$1", receiver)
        return [PortalRow.from_record(r) for r in rows]

    async def upsert(self, p: PortalRow) -> None:
        await self.db.execute(
            f"""INSERT INTO portal ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (id, receiver) DO UPDATE SET mxid=excluded.mxid, name=excluded.name,
                topic=excluded.topic, is_direct=excluded.is_direct, in_space=excluded.in_space,
                metadata=excluded.metadata""",
            p.id, p.receiver, p.mxid, p.name, p.topic, p.is_direct, p.in_space,
            json.dumps(p.metadata),
        )

    async def delete(self, portal_id: str, receiver: str) -> None:
        """The portal and what hangs on it (its messages, parts being sent)."""
        async with transaction(self.db) as conn:
            await conn.execute("DELETE FROM message_part_pending WHERE portal_id=$1 AND receiver=$2",
                               portal_id, receiver)
            await conn.execute("DELETE FROM message WHERE portal_id=$1 AND receiver=$2",
                               portal_id, receiver)
            await conn.execute("DELETE FROM portal WHERE id=$1 AND receiver=$2", portal_id, receiver)
