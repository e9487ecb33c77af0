"""Durable intake of appservice transactions: stored first, acknowledged second, handled once.

A handled event keeps only its ID and done flag (what deduplication needs); its content is
dropped when it is marked done, and the ID itself after the retention period.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import time
from typing import Any

from mautrix.util.async_db import Database

from .rows import rowcount, transaction


@dataclass(slots=True)
class InboxEvent:
    seq: int
    event_id: str
    room_id: str | None
    event: dict[str, Any]


class InboxTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_transaction(self, txn_id: str, events: list[dict[str, Any]]) -> bool:
        """Store a transaction's events atomically; True if any event was new.

        Events are deduplicated by event ID, not by transaction ID: Synapse numbers its
        transactions from 1 again after a restart, so a transaction ID alone proves nothing.
        """
        now = int(time.time() * 1000)
        new = 0
        async with transaction(self.db) as conn:
            await conn.execute(
                """INSERT INTO as_transaction (txn_id, received_at) VALUES ($1, $2)
                   ON CONFLICT (txn_id) DO NOTHING""",
                txn_id, now,
            )
            for event in events:
                event_id = event.get("event_id")
                if not isinstance(event_id, str):
                    continue
                new += rowcount(await conn.execute(
                    """INSERT INTO matrix_event_inbox (event_id, room_id, event_json, received_at)
                       VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING""",
                    event_id, event.get("room_id"), json.dumps(event), now,
                ))
        return new > 0

    async def pending(self, limit: int = 100) -> list[InboxEvent]:
        rows = await self.db.fetch(
            """SELECT seq, event_id, room_id, event_json FROM matrix_event_inbox
               WHERE done=false ORDER BY seq LIMIT $1""",
            limit,
        )
        return [
            InboxEvent(r["seq"], r["event_id"], r["room_id"], json.loads(r["event_json"])) for r in rows
        ]

    async def mark_done(self, seq: int) -> None:
        await self.db.execute(
            "UPDATE matrix_event_inbox SET done=true, event_json='{}' WHERE seq=$1", seq
        )

    async def prune(self, older_than_ms: int) -> int:
        """Forget handled event IDs and transaction IDs received before `older_than_ms`."""
        async with transaction(self.db) as conn:
            events = rowcount(await conn.execute(
                "DELETE FROM matrix_event_inbox WHERE done=true AND received_at < $1", older_than_ms
            ))
            await conn.execute("DELETE FROM as_transaction WHERE received_at < $1", older_than_ms)
        return events
