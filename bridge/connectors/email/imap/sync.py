"""The sync engine: keeps one mailbox login in sync and reconnects on failure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
import logging

from .account import ImapAccount
from .backoff import Backoff
from .checkpoint import CheckpointStore
from .connection import ImapConnection
from .errors import ImapAuthFailed, ImapError, ImapFolderError
from .folder_sync import FolderSyncer, SyncStopped
from .folders import special_use_folder
from .policy import Backfill, DeliveryRetry
from .sink import MailSink, SeenListener
from .state import StateListener, SyncState

log = logging.getLogger(__name__)


class ImapSync:
    """Keeps `folders` of one account in sync with `sink` over a single IMAP connection.

    Where the server offers NOTIFY (RFC 5465) and `use_notify` is on, every folder is watched
    on that one connection without polling: the server announces new mail, expunges and flag
    changes of the selected first folder (INBOX by default) and STATUS changes of the others
    at any time, and only the folders it names are caught up; a NOOP every `idle_renew_s` keeps
    the quiet session alive. Otherwise the first folder is watched with IDLE, re-issued every
    `idle_renew_s` (well inside the 29 min servers allow), and other folders are caught up
    every `poll_interval_s` by leaving IDLE briefly. Without IDLE either (server lacks it, or
    `use_idle=False`) all folders are polled every `poll_interval_s`. Each wake-up, renewal or
    timeout is followed by a UID catch-up, so nothing depends on an announcement being seen.

    Where the server offers CONDSTORE (RFC 7162), flag changes are learnt from each folder's
    HIGHESTMODSEQ and mails marked \\Seen elsewhere are reported to `seen` (if given).
    `special_folders` maps a special-use attribute (e.g. "\\Sent") to what it is for: each
    session looks the folder up (LIST) and syncs it after `folders`; `on_special` hears the
    result (folder name or None). `connect_limit` bounds how many engines log in at once.

    On any connection failure the engine reports TRANSIENT_DISCONNECT and reconnects after a
    jittered exponential back-off, reporting CONNECTED once logged in again; errors raised by
    the sink or the checkpoint store are treated the same way (the mail is retried from the
    last checkpoint). Two back-offs: `connect_backoff` while the server cannot be reached or
    refuses the session (short cap, so the engine is back within seconds of the server), and
    `backoff` for sessions that fail after logging in (longer cap, so a failing sync does not
    log in over and over); each is reset once it succeeds. A rejected login reports BAD_CREDENTIALS and ends retrying until
    `start()` is called again.
    """

    def __init__(
        self,
        account: ImapAccount,
        *,
        sink: MailSink,
        checkpoints: CheckpointStore,
        listener: StateListener,
        folders: list[str] | None = None,
        backfill: Backfill,
        idle_renew_s: float,
        poll_interval_s: float,
        use_idle: bool = True,
        use_notify: bool = True,
        special_folders: Sequence[str] = (),
        on_special: Callable[[str, str | None], None] | None = None,
        seen: SeenListener | None = None,
        connect_limit: asyncio.Semaphore | None = None,
        backoff: Backoff | None = None,
        connect_backoff: Backoff | None = None,
        delivery_retry: DeliveryRetry | None = None,
        batch_size: int = 50,
        batch_bytes: int = 20_000_000,
        stop_grace_s: float = 2.0,
    ) -> None:
        self.account = account
        self.folders = list(folders) if folders else ["INBOX"]
        if len(set(self.folders)) != len(self.folders):
            raise ValueError("folders must be distinct")
        self.idle_renew_s = idle_renew_s
        self.poll_interval_s = poll_interval_s
        self.use_idle = use_idle
        self.use_notify = use_notify
        self.special_folders = tuple(special_folders)
        self._on_special = on_special
        self._connect_limit = connect_limit
        self._specials: list[str] = []
        self.stop_grace_s = stop_grace_s
        self._listener = listener
        self._backoff = backoff or Backoff(initial_s=1.0, max_s=60.0)
        self._connect_backoff = connect_backoff or Backoff(initial_s=0.5, max_s=5.0)
        self._stop = asyncio.Event()
        self._syncer = FolderSyncer(
            sink=sink,
            checkpoints=checkpoints,
            backfill=backfill,
            retry=delivery_retry or DeliveryRetry(),
            stop=self._stop,
            batch_size=batch_size,
            batch_bytes=batch_bytes,
            seen=seen,
        )
        self._task: asyncio.Task[None] | None = None
        self._reported: tuple[SyncState, str | None] | None = None

    # ------------------------------------------------------------------ public

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def state(self) -> SyncState | None:
        """The last reported state (None before the first start)."""
        return self._reported[0] if self._reported else None

    async def start(self) -> None:
        """Start syncing in the background; no-op if already running."""
        if self.running:
            return
        self._stop.clear()
        self._backoff.reset()
        self._connect_backoff.reset()
        self._reported = None
        self._task = asyncio.create_task(
            self._run(), name=f"imap-sync:{self.account.username}"
        )

    async def stop(self) -> None:
        """Stop syncing: leave IDLE and LOGOUT, or cancel after `stop_grace_s` if the sink
        is busy. Idempotent; safe to call when never started."""
        task = self._task
        if task is None:
            return
        self._stop.set()
        if task is asyncio.current_task():
            return  # called from our own listener callback: the loop ends by itself
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=self.stop_grace_s)
            if not done:
                log.info("IMAP sync of %s did not stop in time; cancelling", self.account.username)
                task.cancel()
                await asyncio.wait({task})
        if self._task is task:
            self._task = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("IMAP sync of %s ended with an error", self.account.username, exc_info=exc)

    async def run_once(self) -> None:
        """Connect, catch up every folder once, log out. Errors are raised, not reported."""
        if self.running:
            raise RuntimeError("run_once() cannot be used while the engine is started")
        self._stop.clear()
        conn = await ImapConnection.open(self.account)
        try:
            await self._prepare(conn)
            await self._sync_all(conn)
        except BaseException:
            conn.abort()
            raise
        await conn.close()

    async def backfill_older(self, count: int, criteria: tuple[str, ...] = ("ALL",)) -> int:
        """On a connection of its own: up to `count` older, never bridged mails of the first
        folder (INBOX) that match `criteria`. Errors are raised."""
        conn = await ImapConnection.open(self.account)
        try:
            delivered = await self._syncer.backfill_older(conn, self.folders[0], count, criteria)
        except BaseException:
            conn.abort()
            raise
        await conn.close()
        return delivered

    async def check_now(self) -> None:
        """Reconnect and catch up every folder now (also out of a back-off or a refused login)."""
        await self.stop()
        await self.start()

    # ------------------------------------------------------------------ engine

    async def _run(self) -> None:
        user = self.account.username
        await self._report(SyncState.CONNECTING, None)
        while not self._stop.is_set():
            conn: ImapConnection | None = None
            try:
                conn = await self._open()
                self._connect_backoff.reset()
                log.info("IMAP session for %s established", user)
                await self._report(SyncState.CONNECTED, None)
                await self._session(conn)
            except asyncio.CancelledError:
                if conn is not None:
                    conn.abort()
                raise
            except SyncStopped:
                pass
            except ImapAuthFailed as exc:
                log.warning("IMAP login for %s rejected: %s", user, exc.reason)
                await self._close(conn)
                await self._report(SyncState.BAD_CREDENTIALS, exc.reason)
                return
            except ImapError as exc:
                log.warning("IMAP sync of %s interrupted: %s", user, exc.reason)
                await self._close(conn)
                await self._disconnected(exc.reason, connected=conn is not None)
                continue
            except Exception as exc:
                log.exception("IMAP sync of %s failed", user)
                await self._close(conn)
                await self._disconnected(f"mail sync failed ({type(exc).__name__}); retrying",
                                         connected=conn is not None)
                continue
            await self._close(conn)

    async def _disconnected(self, reason: str, *, connected: bool) -> None:
        if self._stop.is_set():
            return
        await self._report(SyncState.TRANSIENT_DISCONNECT, reason)
        delay = (self._backoff if connected else self._connect_backoff).next_delay()
        log.info("reconnecting %s in %.1f s", self.account.username, delay)
        await self._wait_stop(delay)

    async def _open(self) -> ImapConnection:
        if self._connect_limit is None:
            return await ImapConnection.open(self.account)
        async with self._connect_limit:
            return await ImapConnection.open(self.account)

    @property
    def _watched(self) -> list[str]:
        """Every folder of this session, the first one first."""
        return [*self.folders, *(f for f in self._specials if f not in self.folders)]

    async def _prepare(self, conn: ImapConnection) -> None:
        """Per session: CONDSTORE on where offered; the special-use folders looked up."""
        if conn.supports_condstore:
            await conn.enable_condstore()
        self._specials = []
        for flag in self.special_folders:
            folder = await special_use_folder(conn, flag)
            if folder is not None:
                self._specials.append(folder)
            if self._on_special is not None:
                self._on_special(flag, folder)

    async def _session(self, conn: ImapConnection) -> None:
        await self._prepare(conn)
        if self.use_notify and conn.supports_notify:
            await self._notify_session(conn)
        else:
            await self._idle_session(conn)

    async def _notify_session(self, conn: ImapConnection) -> None:
        """Announced changes only: no IDLE, no polling. NOTIFY is set before the first catch-up,
        so whatever arrives after it is announced and whatever came before is caught up."""
        watched = self._watched
        primary = watched[0]
        # the first folder is announced while selected; while another one is caught up it is
        # not, but it is caught up right after that anyway. Dovecot announces nothing of the
        # selected folder if NOTIFY was set while none was selected.
        await conn.select(primary)
        await conn.notify(watched[1:])
        conn.changes.take()  # the first STATUS of each folder: all are caught up below
        await self._sync_all(conn)
        self._backoff.reset()
        while not self._stop.is_set():
            selected, folders = conn.changes.take()
            if not selected and not folders:
                if conn.supports_idle:
                    # announcements also come without IDLE, but Dovecot starts watching a
                    # folder only a moment after a command: IDLE makes it look at once
                    await conn.idle(self.idle_renew_s, wake=self._stop)
                else:
                    await conn.wait_changes(self.idle_renew_s, self._stop)
                continue
            for folder in watched[1:]:
                if folder in folders or "" in folders:
                    await self._sync_other(conn, folder)
            if self._stop.is_set():
                return
            # back to the first folder (its announcements come as EXISTS/FETCH only while it is
            # selected); whatever changed in it meanwhile is caught up now
            await self._syncer.sync(conn, primary)

    async def _idle_session(self, conn: ImapConnection) -> None:
        loop = asyncio.get_running_loop()
        watched = self._watched
        primary, others = watched[0], watched[1:]
        await self._sync_all(conn)
        self._backoff.reset()
        next_poll = loop.time() + self.poll_interval_s
        while not self._stop.is_set():
            if self.use_idle and conn.supports_idle:
                wait = self.idle_renew_s
                if others:
                    wait = min(wait, next_poll - loop.time())
                conn.changes.take()
                if wait > 0:
                    await conn.idle(wait, wake=self._stop)
                if self._stop.is_set():
                    return
                if others and loop.time() >= next_poll:
                    await self._sync_all(conn)
                    next_poll = loop.time() + self.poll_interval_s
                else:
                    await self._syncer.sync(conn, primary)
            else:
                if await self._wait_stop(self.poll_interval_s):
                    return
                await self._sync_all(conn)

    async def _sync_all(self, conn: ImapConnection) -> None:
        """Catch up every folder; the first one last, so it stays selected."""
        watched = self._watched
        for folder in watched[1:]:
            await self._sync_other(conn, folder)
        await self._syncer.sync(conn, watched[0])

    async def _sync_other(self, conn: ImapConnection, folder: str) -> None:
        try:
            await self._syncer.sync(conn, folder)
        except ImapFolderError as exc:
            # a missing secondary folder must not stop INBOX from syncing
            log.warning("skipping folder %r of %s: %s", folder, self.account.username, exc.reason)

    async def _close(self, conn: ImapConnection | None) -> None:
        if conn is not None:
            await conn.close()

    async def _wait_stop(self, delay: float) -> bool:
        """Sleep `delay` seconds or until stop is requested; True if stop was requested."""
        try:
            async with asyncio.timeout(delay):
                await self._stop.wait()
        except TimeoutError:
            return False
        return True

    async def _report(self, state: SyncState, reason: str | None) -> None:
        if self._reported == (state, reason):
            return
        self._reported = (state, reason)
        try:
            await self._listener.on_state(state, reason)
        except Exception:
            log.exception("state listener failed on %s", state.value)
