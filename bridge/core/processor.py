"""Drains the durable Matrix event inbox: in order per room, each event handled once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import logging
from typing import Any

from ..db import InboxEvent, InboxTable

log = logging.getLogger("letterbox.processor")

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class InboxProcessor:
    """Dispatches stored events to `handler`; one worker per room keeps a room's order."""

    def __init__(self, inbox: InboxTable, handler: Handler, *, retry_interval: float = 2.0) -> None:
        self._inbox = inbox
        self._handler = handler
        self._retry_interval = retry_interval
        self._wake = asyncio.Event()
        self._in_flight: set[int] = set()
        self._rooms: dict[str, asyncio.Queue[InboxEvent]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        # An event whose handler keeps failing (e.g. the database is down) is retried a few
        # times on later passes, then given up with a log line so it cannot block its room.
        self._attempts: dict[int, int] = {}
        self.max_attempts = 3
        # Handled, but the database did not take the mark: marked on later passes, never handled
        # again (they stay in flight), so an outage after the handler ran does not repeat it.
        self._unmarked: set[int] = set()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="inbox-processor")

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self._workers.values()] if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        await self._mark_handled()  # what stays unmarked is handled again after a restart

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            await self._mark_handled()
            try:
                pending = await self._inbox.pending(limit=200)
            except Exception:
                log.exception("Cannot read the event inbox; retrying in %.0fs", self._retry_interval)
                pending = []
            for item in pending:
                if item.seq in self._in_flight:
                    continue
                self._in_flight.add(item.seq)
                room = item.room_id or "~global"
                queue = self._rooms.setdefault(room, asyncio.Queue())
                queue.put_nowait(item)
                worker = self._workers.get(room)
                if worker is None or worker.done():
                    self._workers[room] = asyncio.create_task(self._room_worker(room, queue))
            # Not asyncio.wait_for: on 3.11 it can swallow a cancellation that arrives just as
            # the event is set, and stop() would then wait forever.
            try:
                async with asyncio.timeout(self._retry_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _mark_handled(self) -> None:
        for seq in sorted(self._unmarked):
            try:
                await self._inbox.mark_done(seq)
            except Exception as e:
                log.warning("Cannot mark %d handled event(s) done yet: %s", len(self._unmarked), e)
                return
            self._unmarked.discard(seq)
            self._in_flight.discard(seq)

    async def _room_worker(self, room: str, queue: asyncio.Queue[InboxEvent]) -> None:
        while not queue.empty():
            item = queue.get_nowait()
            handled = True
            try:
                await self._handler(item.event)
            except Exception:
                attempts = self._attempts[item.seq] = self._attempts.get(item.seq, 0) + 1
                log.exception("Failed to handle event %s in %s (attempt %d of %d)",
                              item.event_id, room, attempts, self.max_attempts)
                if attempts < self.max_attempts:
                    self._in_flight.discard(item.seq)
                    continue
                handled = False
            self._attempts.pop(item.seq, None)
            try:
                await self._inbox.mark_done(item.seq)
            except Exception:
                if handled:
                    log.exception("Could not mark event %s handled; marking it later", item.event_id)
                    self._unmarked.add(item.seq)
                    continue
                # Given up while the database is away: left pending, so it is tried afresh later.
                log.exception("Could not mark event %s given up; will retry it", item.event_id)
            self._in_flight.discard(item.seq)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until nothing is pending or in flight (used by tests and shutdown)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if not self._in_flight and not await self._inbox.pending(limit=1):
                return
            self.wake()
            await asyncio.sleep(0.05)
        raise TimeoutError("inbox not drained")
