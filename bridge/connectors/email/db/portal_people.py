"""Who belongs to a room: the correspondents of the mails it holds (thread-hijack defence)."""

from __future__ import annotations

from mautrix.util.async_db import Database


class PortalPeopleTable:
    """Address keys (casefolded) per login and portal, added as mails are placed in the room.

    Rows are never removed, so what was read or written once is remembered: a conversation's
    every further mail then costs no query.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._known: set[tuple[str, str, str]] = set()

    async def add(self, login_id: str, portal_id: str, people: list[str]) -> None:
        for person in dict.fromkeys(people):
            key = (login_id, portal_id, person)
            if key in self._known:
                continue
            await self.db.execute(
                """INSERT INTO email_portal_person (login_id, portal_id, person) VALUES ($1, $2, $3)
                   ON CONFLICT (login_id, portal_id, person) DO NOTHING""",
                login_id, portal_id, person,
            )
            self._known.add(key)

    async def includes(self, login_id: str, portal_id: str, person: str) -> bool:
        key = (login_id, portal_id, person)
        if key in self._known:
            return True
        row = await self.db.fetchrow(
            "SELECT 1 FROM email_portal_person WHERE login_id=$1 AND portal_id=$2 AND person=$3",
            login_id, portal_id, person,
        )
        if row is not None:
            self._known.add(key)
        return row is not None
