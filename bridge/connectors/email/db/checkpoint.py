from __future__ import annotations

from mautrix.util.async_db import Database

from ..imap import Checkpoint


class CheckpointTable:
    """Per-login, per-folder IMAP sync position (the sync engine's CheckpointStore)."""

    def __init__(self, db: Database, login_id: str) -> None:
        self.db = db
        self.login_id = login_id

    async def get(self, folder: str) -> Checkpoint | None:
        row = await self.db.fetchrow(
            "SELECT uidvalidity, last_uid FROM email_folder_checkpoint WHERE login_id=$1 AND folder=$2",
            self.login_id, folder,
        )
        return Checkpoint(uidvalidity=row["uidvalidity"], last_uid=row["last_uid"]) if row else None

    async def set(self, folder: str, checkpoint: Checkpoint) -> None:
        await self.db.execute(
            """INSERT INTO email_folder_checkpoint (login_id, folder, uidvalidity, last_uid)
               VALUES ($1, $2, $3, $4) ON CONFLICT (login_id, folder)
               DO UPDATE SET uidvalidity=excluded.uidvalidity, last_uid=excluded.last_uid""",
            self.login_id, folder, checkpoint.uidvalidity, checkpoint.last_uid,
        )

    async def delete_all(self) -> None:
        await self.db.execute("DELETE FROM email_folder_checkpoint WHERE login_id=$1", self.login_id)
