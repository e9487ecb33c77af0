"""The mails of one folder on their way to the sink: handed over in UID order, finished in any
order, a bounded number at a time, the checkpoint kept below the lowest unfinished one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import logging

from ....network import RetryHook, is_infrastructure_error
from .checkpoint import Checkpoint, CheckpointStore, CheckpointTracker
from .policy import DeliveryRetry
from .sink import Delivery, FetchedMail, MailSink

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class SyncStopped(Exception):
    """Raised inside a sync pass when the engine is asked to stop."""


#: Mails on their way at once, per room that may be busy (a bound on memory).
MAILS_PER_ROOM = 4


class InFlight:
    """Hands a folder's mails to the sink one at a time, as long as fewer than `limit` rooms
    are busy (and fewer than `limit` * MAILS_PER_ROOM mails are on their way), and lets them
    finish at once; the folder's checkpoint follows the lowest unfinished one.

    The sink keeps each room's order; a mail whose handling fails is retried inside its room
    (the `RetryHook` given with it), so only that room waits. When the sink says a mail is
    finished (or given up and reported with `failed`), the checkpoint is moved up to the
    highest UID below the lowest unfinished one (written to `checkpoints`, unless None). The
    first error that ends the session (an outage, a stop, a give-up that could not be recorded)
    halts it: the mails not yet started in their rooms are withdrawn, so no room posts a later
    mail before an earlier one that the next session delivers again; `on_error` is told.
    """

    def __init__(self, *, folder: str, uidvalidity: int, last_uid: int,
                 checkpoints: CheckpointStore | None, sink: MailSink, retry: DeliveryRetry,
                 limit: int, stopped: Callable[[], bool], sleep: Sleep,
                 on_error: Callable[[], None] = lambda: None) -> None:
        if limit < 1:
            raise ValueError("at least one mail must be deliverable at a time")
        self.folder = folder
        self.uidvalidity = uidvalidity
        self._tracker = CheckpointTracker(last_uid)
        self._highest = last_uid
        self._checkpoints = checkpoints
        self._saved = last_uid
        self._saving = asyncio.Lock()
        self._sink = sink
        self._retry = retry
        self._stopped = stopped
        self._sleep = sleep
        self._on_error = on_error
        self._limit = limit
        self._busy: dict[str, int] = {}  # room -> its mails on their way
        self._freed = asyncio.Event()
        self._deliveries: dict[int, asyncio.Future[None]] = {}
        self._finishers: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None

    @property
    def highest(self) -> int:
        """The highest UID handed over or skipped (what comes next must be above it)."""
        return self._highest

    @property
    def last_uid(self) -> int:
        """Every mail at or below this UID is finished."""
        return self._tracker.last_uid

    async def skip(self, uid: int) -> None:
        """A UID with nothing to deliver (expunged, or older than the backfill window)."""
        self._tracker.skip(uid)
        self._highest = uid
        await self._save()

    async def _save(self) -> None:
        if self._checkpoints is None:
            return
        async with self._saving:
            last = self._tracker.last_uid
            if last > self._saved:
                await self._checkpoints.set(self.folder, Checkpoint(self.uidvalidity, last))
                self._saved = last

    # ------------------------------------------------------------------ the dispatcher's side

    async def hand_over(self, mail: FetchedMail) -> None:
        """Hand `mail` to the sink once there is room for it (in UID order: one at a time)."""
        while True:
            self.raise_error()
            if (len(self._busy) < self._limit
                    and len(self._deliveries) < self._limit * MAILS_PER_ROOM):
                break
            self._freed.clear()
            await self._freed.wait()
        self._tracker.begin(mail.uid)
        self._highest = mail.uid
        given_up = asyncio.Event()
        delivery = await self._start(mail, given_up)
        if delivery is None:  # given up and reported before it got a place in a room
            await self._finished(mail)
            return
        self._deliveries[mail.uid] = delivery.done
        self._busy[delivery.room] = self._busy.get(delivery.room, 0) + 1
        task = asyncio.create_task(self._finish(mail, delivery, given_up),
                                   name=f"deliver:{mail.folder}:{mail.uid}")
        self._finishers.add(task)
        task.add_done_callback(self._finishers.discard)

    async def wait(self) -> None:
        """Wait until every mail handed over is finished; raise the error that halted the pass."""
        while self._finishers:
            await asyncio.wait(set(self._finishers))
        self.raise_error()

    async def wait_quietly(self) -> None:
        """Wait until every mail handed over is finished or withdrawn (the pass is stopping)."""
        while self._finishers:
            await asyncio.wait(set(self._finishers))

    async def withdraw(self) -> None:
        """End the pass now: mails not finished stay unfinished (the next pass delivers them)."""
        self._halt()
        while self._finishers:
            await asyncio.wait(set(self._finishers))

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    # ------------------------------------------------------------------ one mail

    async def _start(self, mail: FetchedMail, given_up: asyncio.Event) -> Delivery | None:
        """The sink's delivery of `mail`; its own errors are retried in place (nothing later is
        handed over meanwhile). None: given up, and the give-up is recorded."""
        policy = self._retry
        for attempt in range(1, policy.attempts + 1):
            try:
                return await self._sink.deliver(mail, self._hook(mail, given_up))
            except Exception as exc:
                if is_infrastructure_error(exc):
                    raise
                if attempt == policy.attempts:
                    log.error("giving up on delivering %s", _context(mail, attempt, policy), exc_info=exc)
                    await self._give_up(mail, exc)
                    return None
                log.warning("delivering %s failed: %r; retrying", _context(mail, attempt, policy), exc,
                            exc_info=exc)
                await self._sleep(policy.delay(attempt))
        raise AssertionError("unreachable")

    def _hook(self, mail: FetchedMail, given_up: asyncio.Event) -> RetryHook:
        """Decides, inside the mail's room, whether a failure there is retried."""
        policy = self._retry

        async def retry(exc: BaseException, attempt: int) -> bool:
            if is_infrastructure_error(exc) or self._stopped() or self._error is not None:
                self._halt(but=mail.uid)  # before the room moves on to its next mail
                return False
            context = _context(mail, attempt, policy)
            if attempt >= policy.attempts:
                log.error("giving up on delivering %s", context, exc_info=exc)
                given_up.set()
                return False
            log.warning("delivering %s failed: %r; retrying", context, exc, exc_info=exc)
            try:
                await self._sleep(policy.delay(attempt))
            except SyncStopped:
                self._halt(but=mail.uid)
                raise
            return True

        return retry

    async def _finish(self, mail: FetchedMail, delivery: Delivery, given_up: asyncio.Event) -> None:
        policy = self._retry
        attempt = 0
        done = delivery.done
        try:
            while True:
                try:
                    await done
                    break
                except asyncio.CancelledError:
                    return  # withdrawn: stays unfinished
                except Exception as exc:
                    if given_up.is_set():
                        await self._give_up(mail, exc)
                        break
                    if is_infrastructure_error(exc) or self._stopped() or self._error is not None:
                        raise
                    # failed outside its room's order (the room has moved on): again, in place
                    attempt += 1
                    if attempt >= policy.attempts:
                        log.error("giving up on %s", _context(mail, attempt, policy), exc_info=exc)
                        await self._give_up(mail, exc)
                        break
                    log.warning("finishing %s failed: %r; retrying", _context(mail, attempt, policy),
                                exc, exc_info=exc)
                    await self._sleep(policy.delay(attempt))
                    done = (await self._sink.deliver(mail, self._hook(mail, given_up))).done
                    self._deliveries[mail.uid] = done
            await self._finished(mail)
        except Exception as exc:
            if self._error is None:
                self._error = SyncStopped() if self._stopped() else exc
                self._on_error()
            self._halt()
        finally:
            self._deliveries.pop(mail.uid, None)
            left = self._busy.get(delivery.room, 1) - 1
            if left:
                self._busy[delivery.room] = left
            else:
                self._busy.pop(delivery.room, None)
            self._freed.set()

    async def _finished(self, mail: FetchedMail) -> None:
        self._tracker.finish(mail.uid)
        await self._save()

    async def _give_up(self, mail: FetchedMail, exc: BaseException) -> None:
        """Tell the sink; if even that fails for a reason of the mail's own, move on anyway."""
        try:
            await self._sink.failed(mail, exc)
        except Exception as report_exc:
            if is_infrastructure_error(report_exc):
                raise
            log.error("could not report the failed mail %s UID %d; moving on", mail.folder, mail.uid,
                      exc_info=report_exc)

    def _halt(self, but: int | None = None) -> None:
        """Withdraw every delivery not finished (except `but`'s)."""
        for uid, delivery in list(self._deliveries.items()):
            if uid != but:
                delivery.cancel()


def _context(mail: FetchedMail, attempt: int, policy: DeliveryRetry) -> str:
    return (f"{mail.folder} UID {mail.uid} (UIDVALIDITY {mail.uidvalidity}), "
            f"attempt {attempt}/{policy.attempts}")
