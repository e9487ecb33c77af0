"""Closing a kept session (the SMTP session of the outbox, the IMAP session that files sent mail)
after it went unused for a while."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import logging

log = logging.getLogger(__name__)


class IdleClose:
    """Calls `drop` (under the session's `lock`) once `seconds` passed since the last use.

    A use disarms the timer when it starts and arms it again when it ends, so a use that
    overlaps the timer firing keeps the session: the close only happens while no timer is set.
    """

    def __init__(self, seconds: float, lock: asyncio.Lock, drop: Callable[[], Awaitable[None]],
                 what: str) -> None:
        self.seconds = seconds
        self._lock = lock
        self._drop = drop
        self._what = what
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def arm(self) -> None:
        self.disarm()
        self._timer = asyncio.get_running_loop().call_later(self.seconds, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._closing = asyncio.create_task(self._close(), name=f"idle-close-{self._what}")

    async def _close(self) -> None:
        async with self._lock:
            if self._timer is None:
                log.debug("Closing the idle %s", self._what)
                await self._drop()

    async def cancel(self) -> None:
        """Stop the timer and a close under way (the owner closes the session itself)."""
        self.disarm()
        task, self._closing = self._closing, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
