from __future__ import annotations

from mautrix.util.async_db import Database

from ..imap import Checkpoint


class CheckpointTable:
    """Per-login, per-folder IMAP sync position (the sync engine's CheckpointStore).

    The login's sync engine is the only writer: a position read or written once is kept in
    memory (written through), so the engine's look at a folder costs no query.
    """

    def __init__(self, db: Database, login_id: str) -> None:
        self.db = db
        self.login_id = login_id
        self._known: dict[str, Checkpoint] = {}

    async def get(self, folder: str) -> Checkpoint | None:
        if (known := self._known.get(folder)) is not None:
            return known
        row = await self.db.fetchrow(
            "SELECT uidvalidity, last_uid FROM email_folder_checkpoint WHERE login_id=$1 AND folder=$2",
            self.login_id, folder,
        )
        if row is None:
            return None
        self._known[folder] = Checkpoint(uidvalidity=row["uidvalidity"], last_uid=row["last_uid"])
        return self._known[folder]

    async def set(self, folder: str, checkpoint: Checkpoint) -> None:
        self._known.pop(folder, None)  # unknown until the write is done
        await self.db.execute(
            """INSERT INTO email_folder_checkpoint (login_id, folder, uidvalidity, last_uid)
               VALUES ($1, $2, $3, $4) ON CONFLICT (login_id, folder)
               DO UPDATE SET uidvalidity=excluded.uidvalidity, last_uid=excluded.last_uid""",
            self.login_id, folder, checkpoint.uidvalidity, checkpoint.last_uid,
        )
        self._known[folder] = checkpoint

    async def delete_all(self) -> None:
        self._known.clear()
        await self.db.execute("DELETE FROM email_folder_checkpoint WHERE login_id=$1", self.login_id)
