from __future__ import annotations

from dataclasses import dataclass, field
import json

from mautrix.util.async_db import Database

from bridge.db.rows import Record

_COLUMNS = ("login_id, message_id, portal_id, subject, sender, recipients, cc, refs, folder, uid, sent_at, "
            "answerable")


@dataclass(slots=True)
class MailIndexRow:
    """What outbound replies need to know about a mail: subject, people and references."""

    login_id: str
    message_id: str
    portal_id: str
    subject: str = ""
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    folder: str | None = None
    uid: int | None = None
    sent_at: int = 0
    # False for delivery reports and the like: shown, never a reply target.
    answerable: bool = True

    @classmethod
    def from_record(cls, r: Record) -> MailIndexRow:
        return cls(r["login_id"], r["message_id"], r["portal_id"], r["subject"], r["sender"],
                   json.loads(r["recipients"]), json.loads(r["cc"]), json.loads(r["refs"]),
                   r["folder"], r["uid"], r["sent_at"], bool(r["answerable"]))


class MailIndexTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert(self, m: MailIndexRow) -> None:
        await self.db.execute(
            f"""INSERT INTO email_mail ({_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)
                ON CONFLICT (login_id, message_id) DO UPDATE SET
                portal_id=CASE WHEN email_mail.portal_id = '' THEN excluded.portal_id
                               ELSE email_mail.portal_id END,
                folder=COALESCE(excluded.folder, email_mail.folder),
                uid=COALESCE(excluded.uid, email_mail.uid)""",
            m.login_id, m.message_id, m.portal_id, m.subject, m.sender, json.dumps(m.recipients),
            json.dumps(m.cc), json.dumps(m.refs), m.folder, m.uid, m.sent_at, m.answerable,
        )

    async def get(self, login_id: str, message_id: str) -> MailIndexRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM email_mail WHERE login_id=$1 AND message_id=$2", login_id, message_id
        )
        return MailIndexRow.from_record(row) if row else None

    async def latest_in_portal(self, login_id: str, portal_id: str) -> MailIndexRow | None:
        """The most recent mail of the room that can be answered (never a delivery report)."""
        row = await self.db.fetchrow(
            f"""SELECT {_COLUMNS} FROM email_mail WHERE login_id=$1 AND portal_id=$2 AND answerable
                ORDER BY sent_at DESC LIMIT 1""",
            login_id, portal_id,
        )
        return MailIndexRow.from_record(row) if row else None

    async def portal_for_any(self, login_id: str, message_ids: list[str]) -> str | None:
        """The portal of the first known mail among `message_ids` (for threading replies)."""
        for mid in message_ids:
            row = await self.db.fetchrow(
                "SELECT portal_id FROM email_mail WHERE login_id=$1 AND message_id=$2 AND portal_id <> ''",
                login_id, mid,
            )
            if row:
                return str(row["portal_id"])
        return None

    async def at_places(self, login_id: str, folder: str, uids: list[int]) -> list[MailIndexRow]:
        """The indexed mails stored in `folder` under these UIDs."""
        found: list[MailIndexRow] = []
        for uid in uids:
            row = await self.db.fetchrow(
                f"SELECT {_COLUMNS} FROM email_mail WHERE login_id=$1 AND folder=$2 AND uid=$3",
                login_id, folder, uid,
            )
            if row:
                found.append(MailIndexRow.from_record(row))
        return found

    async def places_up_to(self, login_id: str, portal_id: str, sent_at: int) -> dict[str, list[int]]:
        """Folder -> UIDs of the room's mails sent at or before `sent_at` (those with a place)."""
        rows = await self.db.fetch(
            """SELECT folder, uid FROM email_mail WHERE login_id=$1 AND portal_id=$2 AND sent_at<=$3
                AND folder IS NOT NULL AND uid IS NOT NULL""",
            login_id, portal_id, sent_at,
        )
        places: dict[str, list[int]] = {}
        for row in rows:
            places.setdefault(row["folder"], []).append(row["uid"])
        return places
