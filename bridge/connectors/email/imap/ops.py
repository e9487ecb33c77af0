"""Single mailbox operations for the outbound side, each on its own short-lived session or on a
session kept open between them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from .account import ImapAccount
from .connection import ImapConnection
from .errors import ImapFolderError
from .folder_sync import MESSAGE_ID_ITEMS, MESSAGE_ID_SECTION, message_id_of
from .folders import special_use_folder
from .kept import KeptImapSession
from .responses import quote


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an appended message landed; uid/uidvalidity are None without UIDPLUS."""

    folder: str
    uidvalidity: int | None
    uid: int | None


class ImapOps:
    """set_seen / find_uid_by_message_id / append / special_use_folder for one account.

    Every call opens a session, does its work and logs out (or, with `kept`, works on that
    kept session), so it never interferes with the sync engine's IDLE connection. Errors are
    ImapError subclasses.
    """

    def __init__(self, account: ImapAccount, kept: KeptImapSession | None = None) -> None:
        self.account = account
        self.kept = kept

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[ImapConnection]:
        if self.kept is not None:
            async with self.kept.use(self.account) as kept:
                yield kept
            return
        conn = await ImapConnection.open(self.account)
        try:
            yield conn
        except BaseException:
            conn.abort()
            raise
        await conn.close()

    async def set_seen(self, uids_by_folder: Mapping[str, Collection[int]]) -> int:
        """Add \\Seen to those of the given messages that lack it: in one session, at most one
        UID STORE per folder. UIDs no longer in a folder are ignored. Returns how many were unseen.
        """
        marked = 0
        async with self._session() as conn:
            for folder, uids in uids_by_folder.items():
                if not uids:
                    continue
                await conn.select(folder)
                unseen = set(uids) & set(await conn.uid_search("UNSEEN"))
                if unseen:
                    await conn.uid_store(unseen, "+FLAGS.SILENT", ["\\Seen"])
                    marked += len(unseen)
        return marked

    async def find_uid_by_message_id(self, folder: str, message_id: str) -> int | None:
        """UID of the (lowest-UID) message in `folder` whose Message-ID equals `message_id`."""
        async with self._session() as conn:
            return await self._uid_by_message_id(conn, folder, message_id)

    async def _uid_by_message_id(self, conn: ImapConnection, folder: str, message_id: str) -> int | None:
        wanted = " ".join(message_id.split())
        if not wanted or not wanted.isascii():
            return None
        await conn.select(folder)
        candidates = await conn.uid_search("HEADER", "Message-ID", quote(wanted))
        if not candidates:
            return None
        # SEARCH HEADER matches substrings: confirm the exact value
        for rec in sorted(await conn.uid_fetch(candidates, MESSAGE_ID_ITEMS), key=lambda r: r.uid or 0):
            if message_id_of(rec.sections.get(MESSAGE_ID_SECTION)) == wanted:
                return rec.uid
        return None

    async def special_use_folder(self, flag: str) -> str | None:
        """Folder carrying the SPECIAL-USE attribute `flag` (e.g. "\\Sent"), else None."""
        async with self._session() as conn:
            return await special_use_folder(conn, flag)

    async def append(
        self,
        raw: bytes,
        *,
        folder_special_use: str = "\\Sent",
        flags: Sequence[str] = ("\\Seen",),
        date: datetime | None = None,
        unless_message_id: str | None = None,
    ) -> AppendResult:
        """APPEND `raw` to the folder found by SPECIAL-USE (falling back to usual names).

        With `unless_message_id`, a message with that Message-ID already in the folder is kept
        instead (its UID returned, uidvalidity None): an append repeated after a crash is a no-op.
        """
        async with self._session() as conn:
            folder = await special_use_folder(conn, folder_special_use, fallback=True)
            if folder is None:
                raise ImapFolderError(
                    folder_special_use,
                    f"the mailbox has no {folder_special_use.lstrip(chr(92))} folder",
                )
            if unless_message_id is not None:
                existing = await self._uid_by_message_id(conn, folder, unless_message_id)
                if existing is not None:
                    return AppendResult(folder=folder, uidvalidity=None, uid=existing)
            appended = await conn.append(folder, raw, flags=flags, date=date)
        uidvalidity, uid = appended if appended else (None, None)
        return AppendResult(folder=folder, uidvalidity=uidvalidity, uid=uid)
