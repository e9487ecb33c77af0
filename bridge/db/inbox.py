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

from .lease import COORDINATOR, NOW_MS
from .rows import rowcount, transaction


@dataclass(slots=True)
class InboxEvent:
    seq: int
    event_id: str
    room_id: str | None
    event: dict[str, Any]
    #: With several workers: the lease subject the event's room belongs to (`pending_owned`).
    owner: str | None = None


def _live(column: str) -> str:
    """SQL: the worker named in `column` holds a valid lease (it is alive and not fenced)."""
    return (f"EXISTS (SELECT 1 FROM worker_lease l WHERE l.worker = {column} "
            f"AND l.expires_at > {NOW_MS})")


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

    async def pending_owned(self, worker: str, limit: int = 100) -> list[InboxEvent]:
        """Claim and return unhandled events of the rooms whose lease `worker` holds
        (PostgreSQL, several workers): a portal room belongs to its login's user, a management
        room or a room of a logged-out account to its user, any other room to the coordinator
        lease. An event claimed by another live worker (one holding a valid lease) is not
        taken, nor any later event of its room, so a room whose owner changes stays in order.
        """
        async with transaction(self.db) as conn:
            # Claims are made one worker at a time: each sees the claims made before its own.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('letterbox inbox claim'))")
            rows = await conn.fetch(
                f"""WITH owner AS (
                        SELECT p.mxid AS room_id, l.user_mxid FROM portal p
                        JOIN user_login l ON l.id = p.receiver WHERE p.mxid IS NOT NULL
                        UNION SELECT room_id, user_mxid FROM management_room
                        UNION SELECT room_id, user_mxid FROM retired_portal),
                    mine AS (
                        SELECT i.seq, w.subject FROM matrix_event_inbox i
                        LEFT JOIN owner o ON o.room_id = i.room_id
                        JOIN worker_lease w ON w.subject = COALESCE(o.user_mxid, $3)
                        WHERE i.done = false AND w.worker = $1 AND w.expires_at > {NOW_MS}
                          AND (i.claimed_by IS NULL OR i.claimed_by = $1
                               OR NOT {_live("i.claimed_by")})
                          AND NOT EXISTS (
                              SELECT 1 FROM matrix_event_inbox j
                              WHERE j.room_id = i.room_id AND j.done = false AND j.seq < i.seq
                                AND j.claimed_by <> $1 AND {_live("j.claimed_by")})
                        ORDER BY i.seq LIMIT $2)
                    UPDATE matrix_event_inbox e SET claimed_by = $1 FROM mine
                    WHERE e.seq = mine.seq
                    RETURNING e.seq, e.event_id, e.room_id, e.event_json, mine.subject""",
                worker, limit, COORDINATOR,
            )
        events = [InboxEvent(r["seq"], r["event_id"], r["room_id"], json.loads(r["event_json"]),
                             r["subject"]) for r in rows]
        return sorted(events, key=lambda e: e.seq)

    async def unclaim(self, worker: str, seqs: list[int]) -> None:
        """Events a worker took but gave back unhandled (it stopped serving their rooms)."""
        if seqs:
            await self.db.execute(
                "UPDATE matrix_event_inbox SET claimed_by = NULL "
                "WHERE claimed_by = $1 AND seq = ANY($2::bigint[])", worker, seqs)

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
