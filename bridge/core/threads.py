"""Which message of a Matrix thread a new thread reply follows.

The room's own order is the homeserver's: the thread relations API lists the thread's events
newest first. Stored timestamps cannot decide it: a bridged message keeps its remote timestamp
(an email's `Date:` has whole seconds and is chosen by the sender), a Matrix message the server's.
"""

from __future__ import annotations

from mautrix.api import Method, Path
from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError
from mautrix.types import EventID, RoomID

from ..db import MessageRow, MessageTable

PAGE_SIZE = 50
MAX_PAGES = 4


class ThreadOrderUnavailable(Exception):
    """The homeserver did not list the thread; the reason is for the operator's log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def latest_before(
    intent: IntentAPI, messages: MessageTable, receiver: str, room_id: str, root_event: str,
    event_id: str,
) -> MessageRow | None:
    """The newest bridged message of the thread `root_event` written before `event_id` (the
    thread reply being handled), or None when none is (then the reply follows the root).

    Only the last MAX_PAGES * PAGE_SIZE events of a thread are looked at.
    """
    path = Path.v1.rooms[RoomID(room_id)].relations[EventID(root_event)]["m.thread"]
    passed_own = False
    token: str | None = None
    for _ in range(MAX_PAGES):
        query = {"dir": "b", "limit": str(PAGE_SIZE)}
        if token:
            query["from"] = token
        try:
            page = await intent.api.request(Method.GET, path, query_params=query)
        except MatrixError as e:
            raise ThreadOrderUnavailable(f"thread {root_event} in {room_id}: {e}") from e
        for event in page.get("chunk", []):
            if not passed_own:
                passed_own = event.get("event_id") == event_id
                continue
            row = await messages.by_mxid(str(event.get("event_id", "")))
            if row is not None and row.receiver == receiver:
                return row
        token = page.get("next_batch")
        if not token:
            return None
    return None
