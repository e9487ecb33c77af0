"""One IMAP session kept open between short operations (e.g. filing sent mail in Sent).

Opened at first use, replaced when it broke or the account changed, closed (LOGOUT) after
`idle_close_s` without use and by `close()`. Operations run one at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import logging

from .account import ImapAccount
from .connection import ImapConnection

log = logging.getLogger(__name__)


class KeptImapSession:
    def __init__(self, idle_close_s: float, name: str = "") -> None:
        self.idle_close_s = idle_close_s
        self.name = name
        self.sessions_opened = 0
        self._conn: ImapConnection | None = None
        self._account: ImapAccount | None = None
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._idle_close: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def use(self, account: ImapAccount) -> AsyncIterator[ImapConnection]:
        """The kept session for `account` (opened now if there is none that works)."""
        async with self._lock:
            self._disarm()
            try:
                conn = self._conn
                if conn is None or not conn.usable or self._account != account:
                    await self._drop()
                    conn = await ImapConnection.open(account)
                    self._conn, self._account = conn, account
                    self.sessions_opened += 1
                try:
                    yield conn
                except BaseException:
                    if not conn.usable:
                        await self._drop()
                    raise
            finally:
                self._arm()

    async def _drop(self) -> None:
        conn, self._conn, self._account = self._conn, None, None
        if conn is not None:
            await conn.close()

    def _arm(self) -> None:
        if self._conn is not None:
            self._timer = asyncio.get_running_loop().call_later(self.idle_close_s, self._on_idle)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_idle(self) -> None:
        self._timer = None
        self._idle_close = asyncio.create_task(self._close_if_idle(),
                                               name=f"imap-idle-close-{self.name}")

    async def _close_if_idle(self) -> None:
        async with self._lock:
            if self._timer is None:
                log.debug("Closing the idle IMAP session of %s", self.name)
                await self._drop()

    async def close(self) -> None:
        """LOGOUT the kept session, if any (idempotent)."""
        self._disarm()
        task, self._idle_close = self._idle_close, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with self._lock:
            await self._drop()
