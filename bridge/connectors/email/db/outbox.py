from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
import json
import time

from mautrix.util.async_db import Database

from bridge.db.rows import Record, rowcount

#: Marks the outbox row of a later attempt for recipients that were refused temporarily.
RETRY_MARK = "#retry"

_COLUMNS = ("event_id, login_id, portal_id, room_id, message_id, raw, recipients, state, attempts, "
            "next_attempt, last_error, created_at")


#: Condition on row `o`: no older mail of its room is still waiting to be sent.
_NOT_HELD = f"""NOT EXISTS (
    SELECT 1 FROM email_outbox e WHERE e.login_id=o.login_id AND e.portal_id=o.portal_id
    AND e.state IN ('queued', 'sending') AND e.created_at < o.created_at
    AND e.event_id NOT LIKE '%{RETRY_MARK}%')"""


class OutboxState(str, Enum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(slots=True)
class OutboxRow:
    """One outgoing mail, stored whole (the exact bytes are resent on retry)."""

    event_id: str
    login_id: str
    portal_id: str
    room_id: str
    message_id: str
    raw: bytes
    recipients: list[str]
    state: OutboxState = OutboxState.QUEUED
    attempts: int = 0
    next_attempt: int = 0
    last_error: str | None = None
    created_at: int = 0

    @classmethod
    def from_record(cls, r: Record) -> OutboxRow:
        return cls(r["event_id"], r["login_id"], r["portal_id"], r["room_id"], r["message_id"],
                   bytes(r["raw"]), json.loads(r["recipients"]), OutboxState(r["state"]),
                   r["attempts"], r["next_attempt"], r["last_error"], r["created_at"])


class OutboxTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, row: OutboxRow) -> bool:
        """Queue a mail; False if this Matrix event was queued before (a replayed event)."""
        row.created_at = row.created_at or int(time.time() * 1000)
        result = await self.db.execute(
            f"""INSERT INTO email_outbox ({_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)
                ON CONFLICT (event_id) DO NOTHING""",
            row.event_id, row.login_id, row.portal_id, row.room_id, row.message_id, row.raw,
            json.dumps(row.recipients), row.state.value, row.attempts, row.next_attempt,
            row.last_error, row.created_at,
        )
        return rowcount(result) == 1

    async def get(self, event_id: str) -> OutboxRow | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM email_outbox WHERE event_id=$1", event_id)
        return OutboxRow.from_record(row) if row else None

    async def due(self, login_id: str, now_ms: int) -> list[OutboxRow]:
        """Mails to try now, oldest first; a mail waits while an older one of its room is
        still unsent (a retry for refused recipients of a sent mail holds nothing)."""
        rows = await self.db.fetch(
            f"""SELECT {_COLUMNS} FROM email_outbox o WHERE login_id=$1 AND state IN ('queued', 'sending')
                AND next_attempt <= $2 AND {_NOT_HELD} ORDER BY created_at""",
            login_id, now_ms,
        )
        return [OutboxRow.from_record(r) for r in rows]

    async def next_due_time(self, login_id: str) -> int | None:
        due: int | None = await self.db.fetchval(
            f"""SELECT MIN(next_attempt) FROM email_outbox o WHERE login_id=$1
                AND state IN ('queued', 'sending') AND {_NOT_HELD}""",
            login_id,
        )
        return due

    async def set_state(self, event_id: str, state: OutboxState, *, attempts: int | None = None,
                        next_attempt: int | None = None, last_error: str | None = None) -> None:
        await self.db.execute(
            """UPDATE email_outbox SET state=$2, attempts=COALESCE($3, attempts),
               next_attempt=COALESCE($4, next_attempt), last_error=COALESCE($5, last_error)
               WHERE event_id=$1""",
            event_id, state.value, attempts, next_attempt, last_error,
        )

    async def mark_sent(self, event_id: str, *, attempts: int, copy_to_sent: bool) -> None:
        """Delivered; with `copy_to_sent` the Sent-folder copy is owed from now on (one UPDATE,
        so a crash cannot lose the debt between the two)."""
        await self.db.execute(
            "UPDATE email_outbox SET state='sent', attempts=$2, copy_pending=$3 WHERE event_id=$1",
            event_id, attempts, copy_to_sent,
        )

    async def copies_pending(self, login_id: str) -> list[OutboxRow]:
        rows = await self.db.fetch(
            f"""SELECT {_COLUMNS} FROM email_outbox WHERE login_id=$1 AND state='sent' AND copy_pending
                ORDER BY created_at""",
            login_id,
        )
        return [OutboxRow.from_record(r) for r in rows]

    async def copy_done(self, event_id: str) -> None:
        await self.db.execute("UPDATE email_outbox SET copy_pending=false WHERE event_id=$1", event_id)

    async def sent_in_last_hour(self, login_id: str, now_ms: int) -> int:
        return int(await self.db.fetchval(
            "SELECT COUNT(*) FROM email_outbox WHERE login_id=$1 AND created_at > $2",
            login_id, now_ms - 3_600_000,
        ))

    async def by_message_id(self, login_id: str, message_id: str) -> OutboxRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM email_outbox WHERE login_id=$1 AND message_id=$2",
            login_id, message_id,
        )
        return OutboxRow.from_record(row) if row else None

    async def depth(self) -> dict[tuple[str, bool], int]:
        """Mails kept, over all logins, by (state, Sent-folder copy still owed)."""
        rows = await self.db.fetch(
            "SELECT state, copy_pending, COUNT(*) AS n FROM email_outbox GROUP BY state, copy_pending")
        return {(r["state"], bool(r["copy_pending"])): int(r["n"]) for r in rows}
