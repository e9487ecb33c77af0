"""The one place the core sends Matrix message events.

Content is built as plain JSON dicts throughout the core; mautrix's `send_message_event` is typed
for its own content classes, so the dict is handed over here, once. Idempotent transaction IDs
hook in at this function; encryption happens one level down, in the intent itself
(`appservice_api.EncryptingIntent`), so that mautrix helpers like `send_notice` are covered too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from mautrix.appservice import IntentAPI
from mautrix.types import EventID, EventType, RoomID

#: Content key of the transaction ID a remote message's part was sent with (see `part_sender`).
TXN_KEY = "net.letterbox.txn_id"


async def send_event(
    intent: IntentAPI,
    room_id: str,
    event_type: EventType | str,
    content: Mapping[str, Any],
    *,
    timestamp: int | None = None,
    txn_id: str | None = None,
) -> EventID:
    """Send one message event as `intent`; returns its event ID."""
    if not isinstance(event_type, EventType):
        event_type = EventType.find(event_type, EventType.Class.MESSAGE)
    kwargs: dict[str, Any] = {}
    if timestamp is not None:
        kwargs["timestamp"] = timestamp
    return await intent.send_message_event(
        RoomID(room_id), event_type, cast(Any, dict(content)), txn_id=txn_id, **kwargs
    )
