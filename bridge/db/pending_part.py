"""Parts of a remote message between "about to send" and "sent and recorded".

A message's parts are all marked pending in one transaction before the first one is sent; each
pending row is swapped for its `message` row in one transaction once its event is known. So a
message is fully bridged exactly when it has message rows and no pending rows, and a pending row
found after a crash names a part whose event may or may not exist in Matrix yet.
"""

from __future__ import annotations

from dataclasses import dataclass
import time

from mautrix.util.async_db import Database

from .message import MessageRow, insert_message
from .rows import transaction

_COLUMNS = "receiver, id, part_id, portal_id, room_id, txn_id, created_at"


@dataclass(slots=True)
class PendingPart:
    receiver: str
    id: str
    part_id: str
    portal_id: str
    room_id: str
    txn_id: str
    created_at: int = 0


class PendingPartTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def begin(self, parts: list[PendingPart]) -> None:
        """Mark every part of one message pending, atomically."""
        now = int(time.time() * 1000)
        async with transaction(self.db) as conn:
            for p in parts:
                await conn.execute(
                    f"""INSERT INTO message_part_pending ({_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7)
                        ON CONFLICT (receiver, id, part_id) DO NOTHING""",
                    p.receiver, p.id, p.part_id, p.portal_id, p.room_id, p.txn_id, p.created_at or now,
                )

    async def of_message(self, receiver: str, message_id: str) -> list[PendingPart]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM message_part_pending WHERE receiver=$1 AND id=$2 ORDER BY part_id",
            receiver, message_id,
        )
        return [PendingPart(*(r[c] for c in _COLUMNS.split(", "))) for r in rows]

    async def complete(self, message: MessageRow) -> None:
        """Record the sent part's event and drop its pending mark, atomically."""
        async with transaction(self.db) as conn:
            await insert_message(conn, message)
            await conn.execute(
                "DELETE FROM message_part_pending WHERE receiver=$1 AND id=$2 AND part_id=$3",
                message.receiver, message.id, message.part_id,
            )
