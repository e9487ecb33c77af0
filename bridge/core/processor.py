"""Drains the durable Matrix event inbox: in order per room, each event handled once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import logging
from typing import Any

from ..db import InboxEvent, InboxTable
from ..network import is_infrastructure_error

log = logging.getLogger("letterbox.processor")

Handler = Callable[[dict[str, Any]], Awaitable[None]]
Fetch = Callable[[int], Awaitable[list[InboxEvent]]]
GiveUp = Callable[[dict[str, Any], BaseException], Awaitable[None]]


class InboxProcessor:
    """Dispatches stored events to `handler`; one worker per room keeps a room's order.

    A failing event holds its room: it is retried in place with a growing delay, and the room's
    later events wait behind it. A failure of the homeserver or the database
    (`is_infrastructure_error`) is retried for as long as it lasts without counting against the
    event; any other failure counts, and after `max_attempts` the event is given up (`give_up`
    tells the user) so the room moves on.
    """

    def __init__(self, inbox: InboxTable, handler: Handler, *, give_up: GiveUp | None = None,
                 retry_interval: float = 2.0, retry_delay: float = 0.5, max_retry_delay: float = 30.0,
                 fetch: Fetch | None = None) -> None:
        self._inbox = inbox
        # Which events this process takes (several workers: those of the rooms it holds).
        self._fetch: Fetch = fetch or (lambda limit: inbox.pending(limit=limit))
        self._retry_interval = retry_interval
        self._handler = handler
        self._give_up = give_up
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._wake = asyncio.Event()
        self._in_flight: set[int] = set()
        self._rooms: dict[str, asyncio.Queue[InboxEvent]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        # Several workers: the lease subject of each room seen, and the event each room handles.
        self._owner: dict[str, str] = {}
        self._current: dict[str, InboxEvent] = {}
        self.max_attempts = 3
        # Handled, but the database did not take the mark: marked on later passes, never handled
        # again (they stay in flight), so an outage after the handler ran does not repeat it.
        self._unmarked: set[int] = set()

    def set_retry_interval(self, seconds: float) -> None:
        """How often the inbox is read without a wake-up (workers that do not receive the
        homeserver's transactions learn of new events this way)."""
        self._retry_interval = seconds

    async def release(self, owners: set[str]) -> list[int]:
        """Stop handling the rooms of these lease subjects at once: their room workers are
        cancelled (an event cut short is handled again by the next holder, as after a crash).
        Returns the events given back unhandled."""
        rooms = [room for room, owner in self._owner.items() if owner in owners]
        tasks = []
        for room in rooms:
            del self._owner[room]
            worker = self._workers.pop(room, None)
            if worker is not None:
                worker.cancel()
                tasks.append(worker)
        await asyncio.gather(*tasks, return_exceptions=True)
        dropped: list[int] = []
        for room in rooms:
            current = self._current.pop(room, None)
            if current is not None and current.seq not in self._unmarked:
                dropped.append(current.seq)
            queue = self._rooms.pop(room, None)
            while queue is not None and not queue.empty():
                dropped.append(queue.get_nowait().seq)
        self._in_flight.difference_update(dropped)
        return dropped

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
                pending = await self._fetch(200)
            except Exception:
                log.exception("Cannot read the event inbox; retrying in %.0fs", self._retry_interval)
                pending = []
            for item in pending:
                if item.seq in self._in_flight:
                    continue
                self._in_flight.add(item.seq)
                room = item.room_id or "~global"
                if item.owner is not None:
                    self._owner[room] = item.owner
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
            self._current[room] = item
            await self._handle_holding(room, item)
            try:
                await self._inbox.mark_done(item.seq)
            except Exception:
                log.exception("Could not mark event %s handled; marking it later", item.event_id)
                self._unmarked.add(item.seq)
                self._current.pop(room, None)
                continue
            self._current.pop(room, None)
            self._in_flight.discard(item.seq)

    async def _handle_holding(self, room: str, item: InboxEvent) -> None:
        """Handle `item`, retrying in place until it succeeds or is given up."""
        attempts = 0
        delay = self.retry_delay
        while True:
            try:
                await self._handler(item.event)
                return
            except Exception as e:
                if is_infrastructure_error(e):
                    log.warning("Event %s in %s waits for the homeserver or database (%s); "
                                "retrying in %.1fs", item.event_id, room, e, delay)
                else:
                    attempts += 1
                    log.exception("Failed to handle event %s in %s (attempt %d of %d)",
                                  item.event_id, room, attempts, self.max_attempts)
                    if attempts >= self.max_attempts:
                        await self._report_given_up(item, e)
                        return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def _report_given_up(self, item: InboxEvent, exc: BaseException) -> None:
        if self._give_up is None:
            return
        try:
            await self._give_up(item.event, exc)
        except Exception:
            log.exception("Could not tell the sender that event %s was given up", item.event_id)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until nothing is pending or in flight (used by tests and shutdown)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if not self._in_flight and not await self._inbox.pending(limit=1):
                return
            self.wake()
            await asyncio.sleep(0.05)
        raise TimeoutError("inbox not drained")
