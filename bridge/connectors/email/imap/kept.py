"""One IMAP session kept open between short operations (e.g. filing sent mail in Sent).

Opened at first use, replaced when it broke or the account changed, closed (LOGOUT) after
`idle_close_s` without use and by `close()`. Operations run one at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import logging

from ..idle_close import IdleClose
from .account import ImapAccount
from .connection import ImapConnection

log = logging.getLogger(__name__)


class KeptImapSession:
    def __init__(self, idle_close_s: float, name: str = "") -> None:
        self.name = name
        self.sessions_opened = 0
        self._conn: ImapConnection | None = None
        self._account: ImapAccount | None = None
        self._lock = asyncio.Lock()
        self._idle = IdleClose(idle_close_s, self._lock, self._drop, f"IMAP session of {name}")

    @asynccontextmanager
    async def use(self, account: ImapAccount) -> AsyncIterator[ImapConnection]:
        """The kept session for `account` (opened now if there is none that works)."""
        async with self._lock:
            self._idle.disarm()
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
                if self._conn is not None:
                    self._idle.arm()

    async def _drop(self) -> None:
        conn, self._conn, self._account = self._conn, None, None
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        """LOGOUT the kept session, if any (idempotent)."""
        await self._idle.cancel()
        async with self._lock:
            await self._drop()
