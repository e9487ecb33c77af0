"""Several bridge processes sharing the users of one PostgreSQL database (`workers:` config).

Each worker holds leases on Matrix users (with all their logins and rooms) and perhaps the
coordinator lease (rooms no user owns, retention). Every tick it records a heartbeat; it
renews its leases well inside their lifetime, claims users without a valid lease up to a fair
share (users / live workers, rounded up) and gives back what it holds beyond that share.

Timing, for `lease_seconds` L: a lease is granted for L/2 and renewed every L/8, so a dead
worker's users are free at most L/2 after its death and claimed within a tick after that. A
worker that could not renew stops acting for its users (fencing) at 0.8 of the lease lifetime
counted from the moment it asked for the last successful renewal, before any other worker can
claim them. A worker gives up a lease only after it stopped acting for the user.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import logging
import math
import os
import socket
import time

from ..db import COORDINATOR, LeaseTable

log = logging.getLogger("letterbox.workers")

Subjects = Callable[[set[str]], Awaitable[None]]

FENCE_FRACTION = 0.8


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Workers:
    def __init__(self, table: LeaseTable, worker_id: str, lease_seconds: float, *,
                 gain: Subjects, lose: Subjects) -> None:
        self.table = table
        self.id = worker_id
        self.lease_seconds = lease_seconds
        self.ttl_ms = int(lease_seconds * 500)
        self.renew_every = lease_seconds / 8
        self.tick_s = min(1.0, lease_seconds / 10)
        self._gain = gain
        self._lose = lose
        #: The subjects this worker acts for now (users and perhaps COORDINATOR).
        self.held: set[str] = set()
        self._valid_until = 0.0  # monotonic: when this worker must have stopped acting
        self._renewed_at = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: Set while this worker holds the coordinator lease.
        self.coordinating = asyncio.Event()

    def serves(self, subject: str | None) -> bool:
        return subject is not None and subject in self.held

    @property
    def coordinator(self) -> bool:
        return COORDINATOR in self.held

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="worker-leases")
        self._watchdog = asyncio.create_task(self._fence_watch(), name="worker-fence")

    async def stop(self) -> None:
        """Stop the loops (the caller stops acting for its users, then calls `leave`)."""
        for task in (self._task, self._watchdog):
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in (self._task, self._watchdog) if t],
                             return_exceptions=True)

    async def leave(self) -> None:
        """After a clean stop: the leases are free at once for the other workers."""
        self.held.clear()
        self.coordinating.clear()
        try:
            await self.table.leave(self.id)
        except Exception:
            log.exception("Could not give back the leases of worker %s (they expire)", self.id)

    async def adopt(self, subject: str) -> bool:
        """Hold `subject` (a user who just logged in here) unless another worker holds it."""
        if subject in self.held:
            return True
        if not await self.table.claim(self.id, subject, self.ttl_ms):
            return False
        self.held.add(subject)
        return True

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()  # a round that hangs cannot outlast the leases: see the fence
            except Exception as e:
                log.warning("Worker %s: lease round failed (%s)", self.id, e)
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        async with self._lock:
            await self.table.heartbeat(self.id)
            if time.monotonic() - self._renewed_at >= self.renew_every:
                await self._renew()
            if not self.coordinator and await self.table.claim(self.id, COORDINATOR, self.ttl_ms):
                log.info("Worker %s is the coordinator", self.id)
                await self._gained({COORDINATOR})
            await self._balance()

    async def _renew(self) -> None:
        asked_at = time.monotonic()
        still = await self.table.renew(self.id, self.ttl_ms)
        self._renewed_at = asked_at
        self._valid_until = asked_at + self.ttl_ms / 1000 * FENCE_FRACTION
        lost = self.held - still
        if lost:
            log.warning("Worker %s lost %d lease(s) it could not renew in time", self.id, len(lost))
            await self._lost(lost)
        back = still - self.held
        if back:  # held in the database after a local fence: act for them again
            await self._gained(back)

    async def _balance(self) -> None:
        users = await self.table.users()
        live = await self.table.live_workers(self.ttl_ms)
        share = math.ceil(users / live)
        mine = sorted(s for s in self.held if s != COORDINATOR)
        if len(mine) > share:
            excess = set(mine[share:])
            log.info("Worker %s gives %d user(s) to other workers (share %d of %d over %d)",
                     self.id, len(excess), share, users, live)
            await self._lost(excess)
            await self.table.release(self.id, sorted(excess))
        elif len(mine) < share and await self.table.claimable():
            got = set(await self.table.claim_users(self.id, self.ttl_ms, share - len(mine)))
            if got:
                log.info("Worker %s took %d user(s) (now %d, share %d)", self.id, len(got),
                         len(mine) + len(got), share)
                await self._gained(got)

    async def _gained(self, subjects: set[str]) -> None:
        try:
            await self._gain(subjects)
        except Exception:
            # Not half-held: give them back, another round (or worker) tries again.
            log.exception("Worker %s could not take over %d user(s)", self.id, len(subjects))
            await self._lose(subjects)
            await self.table.release(self.id, sorted(subjects))
            return
        self.held |= subjects
        if COORDINATOR in subjects:
            self.coordinating.set()

    async def _lost(self, subjects: set[str]) -> None:
        self.held -= subjects  # first: no new event of theirs is taken from here on
        if COORDINATOR in subjects:
            self.coordinating.clear()
        await self._lose(subjects)

    async def _fence_watch(self) -> None:
        while True:
            wait = self._valid_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, self.tick_s))
                continue
            if self.held:
                log.error("Worker %s could not renew its leases in time; it stops acting for "
                          "%d user(s) until it can", self.id, len(self.held))
                await self._lost(set(self.held))
            await asyncio.sleep(self.tick_s)
