"""Mails of one login that the core has queued but that are not yet recorded here.

Several mails are on their way to Matrix at once (each in its room's queue). Where a mail goes
depends on what earlier mail left behind: the index rows of the mails it answers, the people of
the room it would join. A mail that depends on one still on its way waits for it first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from ...network import PortalID, QueuedEvent, RetryHook


class Withdrawable(asyncio.Future[None]):
    """Completes once a queued mail is posted and recorded. Cancelling it withdraws the mail
    from its room's queue at once (if the room has not started on it), so a room never moves
    on to a later mail in the moment between the two."""

    def __init__(self, queued: asyncio.Future[None]) -> None:
        super().__init__()
        self._queued = queued

    def cancel(self, msg: object = None) -> bool:
        self._queued.cancel(msg)
        return super().cancel(msg)


@dataclass(slots=True)
class _Entry:
    portal: PortalID
    task: asyncio.Task[None]


class MailInFlight:
    """Message-ID -> the portal a queued mail goes to, until it is recorded (or withdrawn)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def track(self, message_id: str, queued: QueuedEvent,
              record: Callable[[PortalID], Awaitable[None]], retry: RetryHook) -> Withdrawable:
        """`record(portal)` runs once the core has handled the mail (a failure is offered to
        `retry`, and the mail stays on its way meanwhile); the returned delivery completes
        after it."""
        delivery = Withdrawable(queued.done)

        async def finish() -> None:
            try:
                await queued.done
                attempt = 0
                while True:
                    try:
                        await record(queued.portal)
                        break
                    except Exception as exc:
                        attempt += 1
                        if not await retry(exc, attempt):
                            raise
            except asyncio.CancelledError:
                delivery.cancel()
            except Exception as exc:
                if not delivery.done():
                    delivery.set_exception(exc)
            else:
                if not delivery.done():
                    delivery.set_result(None)
            finally:
                if self._entries.get(message_id) is entry:
                    del self._entries[message_id]

        entry = _Entry(queued.portal, asyncio.create_task(finish(), name=f"mail:{message_id}"))
        self._entries[message_id] = entry
        return delivery

    async def settle(self, message_ids: Iterable[str] = (), portal: str | None = None) -> None:
        """Wait until the mails `message_ids` and the mails going to `portal` are recorded."""
        wanted = set(message_ids)
        tasks = {e.task for mid, e in self._entries.items() if mid in wanted or e.portal == portal}
        if tasks:
            await asyncio.wait(tasks)
