"""Filing sent mail in the Sent folder: in the order it was sent, once, off the send path.

The debt is durable: the outbox marks a mail sent and owes its copy in one UPDATE, and this
worker clears it once the copy is in Sent. It works through the owed copies oldest first on the
login's kept IMAP session; every APPEND is preceded by a search for the mail's Message-ID, so a
copy made just before a crash or a lost connection is kept instead of made again. While one copy
cannot be made (server unreachable) the later ones wait behind it, and while the outbox has mail
ready to go (`gate` cleared) they all wait.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .db import OutboxRow, OutboxTable

if TYPE_CHECKING:
    from .client import EmailClient

log = logging.getLogger("letterbox.email.outbox")

#: How long a Sent-folder copy that could not be made waits before the next try.
COPY_RETRY_S = 60.0


class SentCopies:
    def __init__(self, client: EmailClient, table: OutboxTable, gate: asyncio.Event) -> None:
        self.client = client
        self.gate = gate
        self.table = table
        self._owed: dict[str, OutboxRow] = {}  # by event ID, oldest first
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def resume(self) -> None:
        """Load the copies still owed (oldest first) and start working through them; call it
        before anything new is owed, so the order holds across a restart."""
        self._owed = {row.event_id: row
                      for row in await self.table.copies_pending(self.client.login.login_id)}
        self._task = asyncio.create_task(self._run(), name=f"sent-copies-{self.client.address}")

    def owe(self, row: OutboxRow) -> None:
        self._owed.setdefault(row.event_id, row)
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            while self._owed:
                await self.gate.wait()
                row = next(iter(self._owed.values()))
                try:
                    # once more at once: a kept session that had died is replaced by then
                    made = await self.client.copy_to_sent(row.raw, row.message_id) or \
                        await self.client.copy_to_sent(row.raw, row.message_id)
                    if made:
                        await self.table.copy_done(row.event_id)
                except Exception:
                    log.exception("Filing mail %s in Sent failed", row.message_id)
                    made = False
                if not made:
                    await asyncio.sleep(COPY_RETRY_S)
                    continue
                del self._owed[row.event_id]
            await self._wake.wait()
