"""Bringing one folder up to date over an open session: first-sync backfill, catch-up by UID,
and recovery after a UIDVALIDITY change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
import logging

from ....network import is_infrastructure_error
from .checkpoint import Checkpoint, CheckpointStore
from .connection import ImapConnection
from .policy import Backfill, DeliveryRetry
from .responses import FetchRecord, MailboxStatus, imap_date
from .sink import FetchedMail, MailSink, SeenListener

log = logging.getLogger(__name__)

FULL_ITEMS = "(UID FLAGS INTERNALDATE BODY.PEEK[])"
MESSAGE_ID_ITEMS = "(UID INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
MESSAGE_ID_SECTION = "BODY[HEADER.FIELDS (MESSAGE-ID)]"
SIZE_CHUNK = 1000
HEADER_CHUNK = 500


class SyncStopped(Exception):
    """Raised inside a sync pass when the engine is asked to stop."""


def message_id_of(header_block: bytes | None) -> str | None:
    """The Message-ID from a header block, unfolded and stripped, or None."""
    if not header_block:
        return None
    value = BytesHeaderParser(policy=compat32).parsebytes(header_block).get("Message-ID")
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class FolderSyncer:
    """Delivers a folder's new mail to the sink in UID order and advances its checkpoint.

    Fetches use BODY.PEEK[], so nothing is marked \\Seen. Mail is fetched in batches of at
    most `batch_size` messages and (unless a single message is larger) `batch_bytes` bytes.
    """

    def __init__(
        self,
        *,
        sink: MailSink,
        checkpoints: CheckpointStore,
        backfill: Backfill,
        retry: DeliveryRetry,
        stop: asyncio.Event,
        batch_size: int = 50,
        batch_bytes: int = 20_000_000,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        seen: SeenListener | None = None,
    ) -> None:
        self._sink = sink
        self._checkpoints = checkpoints
        self._backfill = backfill
        self._retry = retry
        self._stop = stop
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._now = now
        self._seen = seen
        # folder -> (UIDVALIDITY, HIGHESTMODSEQ) up to which flag changes were looked at
        self._modseq: dict[str, tuple[int, int]] = {}

    async def sync(self, conn: ImapConnection, folder: str) -> int:
        """Select `folder` and deliver whatever is due; returns the number of mails handed over.

        Passes repeat until one finds no new UID and the server announced no new mail
        (EXISTS) meanwhile: a SEARCH runs on the session's view from before such an
        announcement, and the announcement itself is not repeated when IDLE starts.
        """
        delivered = 0
        while True:
            status = await conn.select(folder)
            announced = conn.exists_seen
            if status.highestmodseq is not None and folder not in self._modseq:
                # flag changes are looked for from the first look at the folder on
                self._modseq[folder] = (status.uidvalidity, status.highestmodseq)
            checkpoint = await self._checkpoints.get(folder)
            if checkpoint is None:
                delivered += await self._first_sync(conn, folder, status)
                continue
            if checkpoint.uidvalidity != status.uidvalidity:
                delivered += await self._resync(conn, folder, status, checkpoint)
                continue
            found, handed = await self._catch_up(conn, folder, status, checkpoint)
            delivered += handed
            if found == 0 and conn.exists_seen == announced:
                await self._flag_changes(conn, folder, status)
                return delivered

    async def backfill_older(self, conn: ImapConnection, folder: str, count: int,
                             criteria: tuple[str, ...] = ("ALL",)) -> int:
        """Deliver up to `count` mails of `folder` matching `criteria` that were never bridged,
        the newest first chosen, handed over oldest first (a user's `backfill`). Only mail at or
        below the folder's checkpoint is looked at: newer mail is the live sync's."""
        status = await conn.select(folder)
        checkpoint = await self._checkpoints.get(folder)
        uids = sorted(set(await conn.uid_search(*criteria)), reverse=True)
        if checkpoint is not None and checkpoint.uidvalidity == status.uidvalidity:
            uids = [u for u in uids if u <= checkpoint.last_uid]
        chosen: list[int] = []
        for chunk in _chunks(uids, HEADER_CHUNK):
            records = await conn.uid_fetch(chunk, MESSAGE_ID_ITEMS)
            for rec in sorted((r for r in records if r.uid is not None), key=_uid, reverse=True):
                message_id = message_id_of(rec.sections.get(MESSAGE_ID_SECTION))
                if message_id is None or not await self._sink.is_known(message_id):
                    chosen.append(_uid(rec))
                if len(chosen) >= count:
                    break
            if len(chosen) >= count:
                break
        return await self._fetch_and_deliver(conn, folder, status.uidvalidity, sorted(chosen),
                                             backfill=True, checkpoint_each=False)

    # ------------------------------------------------------------------ the three cases

    async def _catch_up(
        self, conn: ImapConnection, folder: str, status: MailboxStatus, checkpoint: Checkpoint
    ) -> tuple[int, int]:
        """Deliver every UID above the checkpoint; returns (new UIDs found, mails delivered)."""
        if status.uidnext is not None and status.uidnext - 1 <= checkpoint.last_uid:
            return 0, 0
        # "n:*" also matches the highest UID when it is below n, hence the filter
        found = await conn.uid_search("UID", f"{checkpoint.last_uid + 1}:*")
        uids = sorted(u for u in set(found) if u > checkpoint.last_uid)
        if not uids:
            if status.uidnext is not None:
                # the UIDs below UIDNEXT that we never saw were expunged: skip past them
                await self._checkpoints.set(
                    folder, Checkpoint(status.uidvalidity, status.uidnext - 1)
                )
            return 0, 0
        log.debug("%s: %d new message(s) after UID %d", folder, len(uids), checkpoint.last_uid)
        handed = await self._fetch_and_deliver(
            conn, folder, status.uidvalidity, uids, backfill=False, checkpoint_each=True
        )
        return len(uids), handed

    async def _first_sync(self, conn: ImapConnection, folder: str, status: MailboxStatus) -> int:
        window = await self._window(conn)
        log.info("%s: first sync, backfilling %d message(s)", folder, len(window))
        delivered = await self._fetch_and_deliver(
            conn,
            folder,
            status.uidvalidity,
            window,
            backfill=True,
            checkpoint_each=True,
            not_before=self._cutoff(),
        )
        await self._finish(conn, folder, status, window)
        return delivered

    async def _resync(
        self, conn: ImapConnection, folder: str, status: MailboxStatus, checkpoint: Checkpoint
    ) -> int:
        """Deliver the mail of the new folder state that is not known by Message-ID: whatever
        the backfill window holds, and everything that arrived since the newest known mail
        (however much that is: mail that came while the bridge was away is not lost)."""
        log.warning(
            "%s: UIDVALIDITY changed from %d to %d; delivering only unknown Message-IDs",
            folder,
            checkpoint.uidvalidity,
            status.uidvalidity,
        )
        everything = sorted(set(await conn.uid_search("ALL")))
        unknown: dict[int, datetime | None] = {}
        newest_known: datetime | None = None
        for chunk in _chunks(everything, HEADER_CHUNK):
            records = await conn.uid_fetch(chunk, MESSAGE_ID_ITEMS)
            for rec in sorted((r for r in records if r.uid is not None), key=_uid):
                message_id = message_id_of(rec.sections.get(MESSAGE_ID_SECTION))
                # without a Message-ID we cannot tell: deliver (a duplicate beats a loss)
                if message_id is None or not await self._sink.is_known(message_id):
                    unknown[_uid(rec)] = rec.internal_date
                elif rec.internal_date is not None and (
                    newest_known is None or rec.internal_date > newest_known
                ):
                    newest_known = rec.internal_date
        window = set(await self._window(conn))
        due = [
            uid for uid, date in unknown.items()
            if uid in window or (newest_known is not None and (date is None or date >= newest_known))
        ]
        log.info("%s: %d of %d message(s) to deliver after the UIDVALIDITY change", folder,
                 len(due), len(everything))
        # checkpoints keep the old UIDVALIDITY until the end: an interrupted recovery is redone
        delivered = await self._fetch_and_deliver(
            conn,
            folder,
            status.uidvalidity,
            sorted(due),
            backfill=True,
            checkpoint_each=False,
            not_before=self._cutoff(),
        )
        await self._finish(conn, folder, status, everything)
        return delivered

    async def _flag_changes(self, conn: ImapConnection, folder: str, status: MailboxStatus) -> None:
        """Report mails marked \\Seen since the folder was last looked at (one UID FETCH
        CHANGEDSINCE, only when HIGHESTMODSEQ moved)."""
        if self._seen is None or status.highestmodseq is None:
            return
        known = self._modseq.get(folder)
        self._modseq[folder] = (status.uidvalidity, status.highestmodseq)
        if known is None or known[0] != status.uidvalidity or known[1] >= status.highestmodseq:
            return
        seen = sorted(rec.uid for rec in await conn.changed_flags(known[1])
                      if rec.uid is not None and rec.flags is not None and "\\Seen" in rec.flags)
        if not seen:
            return
        try:
            await self._seen.seen_elsewhere(folder, status.uidvalidity, seen)
        except Exception as exc:
            if is_infrastructure_error(exc):
                raise
            # a read marker is not worth stopping the mail for
            log.warning("%s: could not pass on %d mail(s) read elsewhere", folder, len(seen),
                        exc_info=exc)

    # ------------------------------------------------------------------ helpers

    def _cutoff(self) -> datetime | None:
        if self._backfill.max_age_days is None:
            return None
        return self._now() - timedelta(days=self._backfill.max_age_days)

    async def _window(self, conn: ImapConnection) -> list[int]:
        """UIDs of the backfill window, ascending (SINCE has day granularity; the exact age
        limit is applied to INTERNALDATE after fetching)."""
        if self._backfill.max_messages == 0:
            return []
        cutoff = self._cutoff()
        criteria = ("SINCE", imap_date(cutoff.date())) if cutoff is not None else ("ALL",)
        uids = sorted(set(await conn.uid_search(*criteria)))
        return uids[-self._backfill.max_messages :]

    async def _finish(
        self, conn: ImapConnection, folder: str, status: MailboxStatus, window: list[int]
    ) -> None:
        if status.uidnext is not None:
            highest = status.uidnext - 1
        else:
            highest = max(await conn.uid_search("ALL"), default=0)
        highest = max([highest, *window])
        await self._checkpoints.set(folder, Checkpoint(status.uidvalidity, highest))

    async def _batches(self, conn: ImapConnection, uids: list[int]) -> list[list[int]]:
        sizes: dict[int, int] = {}
        for chunk in _chunks(uids, SIZE_CHUNK):
            for rec in await conn.uid_fetch(chunk, "(UID RFC822.SIZE)"):
                if rec.uid is not None and rec.size is not None:
                    sizes[rec.uid] = rec.size
        batches: list[list[int]] = []
        current: list[int] = []
        current_bytes = 0
        for uid in uids:
            if uid not in sizes:
                continue  # expunged meanwhile
            size = sizes[uid]
            if current and (
                len(current) >= self._batch_size or current_bytes + size > self._batch_bytes
            ):
                batches.append(current)
                current, current_bytes = [], 0
            current.append(uid)
            current_bytes += size
        if current:
            batches.append(current)
        return batches

    async def _fetch_and_deliver(
        self,
        conn: ImapConnection,
        folder: str,
        uidvalidity: int,
        uids: list[int],
        *,
        backfill: bool,
        checkpoint_each: bool,
        not_before: datetime | None = None,
    ) -> int:
        if not uids:
            return 0
        delivered = 0
        for batch in await self._batches(conn, uids):
            self._check_stop()
            records = {
                rec.uid: rec
                for rec in await conn.uid_fetch(batch, FULL_ITEMS)
                if rec.uid is not None and "BODY[]" in rec.sections
            }
            for uid in batch:
                self._check_stop()
                rec = records.get(uid)
                if rec is None:
                    log.info("%s: UID %d was expunged before it could be fetched", folder, uid)
                    continue
                too_old = (
                    not_before is not None
                    and rec.internal_date is not None
                    and rec.internal_date < not_before
                )
                if not too_old:
                    await self._deliver(_to_mail(folder, uidvalidity, rec, backfill))
                    delivered += 1
                if checkpoint_each:
                    await self._checkpoints.set(folder, Checkpoint(uidvalidity, uid))
        return delivered

    async def _deliver(self, mail: FetchedMail) -> None:
        """Deliver one mail, retrying in place; give it up after `attempts` failures of its own.

        A homeserver or database outage (`is_infrastructure_error`) is not the mail's fault: it
        is raised, so the session ends and the engine resumes from the checkpoint once it can.
        """
        policy = self._retry
        for attempt in range(1, policy.attempts + 1):
            try:
                await self._sink.deliver(mail)
                return
            except Exception as exc:
                if is_infrastructure_error(exc):
                    raise
                context = (
                    f"{mail.folder} UID {mail.uid} (UIDVALIDITY {mail.uidvalidity}), "
                    f"attempt {attempt}/{policy.attempts}"
                )
                if attempt == policy.attempts:
                    log.error("giving up on delivering %s", context, exc_info=exc)
                    await self._give_up(mail, exc)
                    return
                log.warning("delivering %s failed: %r; retrying", context, exc, exc_info=exc)
                await self._sleep(policy.delay(attempt))

    async def _give_up(self, mail: FetchedMail, exc: BaseException) -> None:
        """Tell the sink; if even that fails for a reason of the mail's own, move on anyway."""
        try:
            await self._sink.failed(mail, exc)
        except Exception as report_exc:
            if is_infrastructure_error(report_exc):
                raise
            log.error("could not report the failed mail %s UID %d; moving on", mail.folder, mail.uid,
                      exc_info=report_exc)

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise SyncStopped()

    async def _sleep(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            return
        raise SyncStopped()


def _uid(rec: FetchRecord) -> int:
    assert rec.uid is not None
    return rec.uid


def _to_mail(folder: str, uidvalidity: int, rec: FetchRecord, backfill: bool) -> FetchedMail:
    return FetchedMail(
        folder=folder,
        uid=_uid(rec),
        uidvalidity=uidvalidity,
        raw=rec.sections["BODY[]"],
        flags=rec.flags or frozenset(),
        internal_date=rec.internal_date,
        backfill=backfill,
    )
