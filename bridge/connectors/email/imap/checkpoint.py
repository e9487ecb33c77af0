"""Per-folder sync position and the store that keeps it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Every message of the folder with UID <= `last_uid` (under `uidvalidity`) is handled."""

    uidvalidity: int
    last_uid: int


class CheckpointStore(Protocol):
    """Durable storage for one account's checkpoints, keyed by folder name."""

    async def get(self, folder: str) -> Checkpoint | None: ...

    async def set(self, folder: str, checkpoint: Checkpoint) -> None: ...


class CheckpointTracker:
    """Where a folder's checkpoint may stand while its mails finish out of order.

    Mails are begun in ascending UID order and finish in any order. The checkpoint is the
    highest begun UID below the lowest unfinished one: every mail at or below it is finished,
    so a restart from it loses nothing (and repeats only unfinished mail).
    """

    def __init__(self, last_uid: int) -> None:
        self._last_uid = last_uid
        self._open: deque[int] = deque()  # begun, not yet passed by the checkpoint; ascending
        self._finished: set[int] = set()  # finished, but above an unfinished one
        self._pending: set[int] = set()

    @property
    def last_uid(self) -> int:
        return self._last_uid

    @property
    def unfinished(self) -> int:
        """How many begun mails have not finished."""
        return len(self._pending)

    def begin(self, uid: int) -> None:
        highest = self._open[-1] if self._open else self._last_uid
        if uid <= highest:
            raise ValueError(f"UID {uid} begun after UID {highest}")
        self._open.append(uid)
        self._pending.add(uid)

    def finish(self, uid: int) -> None:
        if uid not in self._pending:
            raise ValueError(f"UID {uid} was not begun, or finished already")
        self._pending.discard(uid)
        self._finished.add(uid)
        while self._open and self._open[0] in self._finished:
            self._last_uid = self._open.popleft()
            self._finished.discard(self._last_uid)

    def skip(self, uid: int) -> None:
        """A UID with nothing to deliver (expunged, or older than the backfill window)."""
        self.begin(uid)
        self.finish(uid)
