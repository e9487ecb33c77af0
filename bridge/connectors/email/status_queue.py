"""The outbox's reports to Matrix (send status, read receipt, notices), off the send path.

Reports go out one at a time in the order they were posted, so a mail's "will retry" always
comes before its "sent"; the outbox posts them and goes on with the next mail at once instead of
waiting for the homeserver. While the outbox has mail ready to go (`gate` cleared), reports
wait: a burst of mail is not slowed by them (its length is bounded by the hourly limit of a
login). A report lost to a crash is not repeated (it was never part of the outbox's durable
state).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import logging

log = logging.getLogger("letterbox.email.outbox")

Report = Callable[[], Awaitable[None]]


class StatusQueue:
    def __init__(self, name: str, gate: asyncio.Event) -> None:
        self.name = name
        self.gate = gate
        self._queue: asyncio.Queue[Report] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"outbox-status-{self.name}")

    def post(self, report: Report) -> None:
        self._queue.put_nowait(report)

    async def stop(self, flush_s: float = 5.0) -> None:
        """Send what is queued (for at most `flush_s`), then stop."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(flush_s):
                await self._queue.join()
        except TimeoutError:
            log.warning("%d send reports of %s not sent before stopping", self._queue.qsize(),
                        self.name)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            report = await self._queue.get()
            try:
                await self.gate.wait()
                await report()
            except Exception:
                log.exception("A send report of %s failed", self.name)
            finally:
                self._queue.task_done()
