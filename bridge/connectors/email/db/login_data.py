"""What the email connector keeps per login, as a whole: deleted at logout, pruned by retention."""

from __future__ import annotations

from collections.abc import Callable

from mautrix.util.async_db import Database

from bridge.db.rows import rowcount, transaction

# Every table of this connector with a `login_id` column.
_PER_LOGIN = ("email_outbox", "email_mail", "email_folder_checkpoint", "email_portal_person")


class LoginDataTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def delete_login(self, login_id: str) -> int:
        """Delete every row of one login (queued mail included); the number of rows."""
        deleted = 0
        async with transaction(self.db) as conn:
            for table in _PER_LOGIN:
                deleted += rowcount(await conn.execute(f"DELETE FROM {table} WHERE login_id=$1", login_id))
        return deleted

    async def delete_orphans(self, is_live: Callable[[str], bool]) -> int:
        """Delete the rows of logins that no longer exist (logged out before logout deleted
        them, or by an older version). `is_live` is asked after the IDs are read, so a login
        created meanwhile is never taken for an orphan."""
        ids: set[str] = set()
        for table in _PER_LOGIN:
            ids |= {r["login_id"] for r in await self.db.fetch(f"SELECT DISTINCT login_id FROM {table}")}
        deleted = 0
        for login_id in sorted(ids):
            if not is_live(login_id):
                deleted += await self.delete_login(login_id)
        return deleted

    async def prune_finished_outbox(self, before_ms: int) -> int:
        """Delete sent and failed outgoing mail (stored whole) created before `before_ms`."""
        return rowcount(await self.db.execute(
            "DELETE FROM email_outbox WHERE state IN ('sent', 'failed') AND created_at < $1", before_ms
        ))
