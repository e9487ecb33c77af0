"""What the sync engine hands fetched mail to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class FetchedMail:
    """One message as fetched from the server (never marked \\Seen by fetching).

    `backfill` is True for history delivered on a folder's first sync or after a UIDVALIDITY
    change, False for mail that arrived after the folder was first synced.
    """

    folder: str
    uid: int
    uidvalidity: int
    raw: bytes = field(repr=False)
    flags: frozenset[str]
    internal_date: datetime | None
    backfill: bool


class MailSink(Protocol):
    """Consumer of fetched mail (the bridge's inbound pipeline).

    `deliver` must return only once the mail is durably handled; the engine advances the
    folder checkpoint past a UID only after `deliver` returned (or `failed` returned, see
    `DeliveryRetry`). The same mail may be delivered again after a crash (at-least-once).
    `failed` must durably record the give-up (e.g. a dead-letter entry) or raise; if it
    raises, the checkpoint is not advanced and the engine retries the mail later.
    `is_known` tells whether a Message-ID (angle brackets included, as in the header) has
    been handled before; it is only asked after a folder's UIDVALIDITY changed.
    """

    async def deliver(self, mail: FetchedMail) -> None: ...

    async def failed(self, mail: FetchedMail, exc: BaseException) -> None: ...

    async def is_known(self, message_id: str) -> bool: ...


class SeenListener(Protocol):
    """Told which already delivered mails got `\\Seen` elsewhere (another mail client), as
    learnt from the folder's flag changes (CONDSTORE). Changes made while the bridge was not
    running are not reported."""

    async def seen_elsewhere(self, folder: str, uidvalidity: int, uids: list[int]) -> None: ...
