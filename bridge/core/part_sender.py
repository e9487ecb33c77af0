"""Sending the parts of remote messages to Matrix, each exactly once.

Every part is sent with a transaction ID derived from (login, message ID, part ID), and carries
that ID in its content under `TXN_KEY`. The transaction ID alone is not enough: Synapse
deduplicates a repeated `PUT /rooms/{room}/send/{type}/{txn}` of an appservice only in memory
(`HttpTransactionCache`, keyed by the request path and the appservice ID, kept 30 to 60 minutes,
lost when Synapse restarts); the persistent `event_txn_id_device_id` table is only written for
requests with a device, which puppeted appservice requests do not have. So a part that was
pending when the bridge stopped is first looked up in the room's recent history by its marker;
only if it is not there is it sent again, with the same transaction ID, which also merges the
resend with a request Synapse may still be processing. In encrypted rooms the marker is kept
beside the ciphertext (`appservice_api.EncryptingIntent`), where the lookup can see it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from mautrix.api import Method, Path
from mautrix.appservice import IntentAPI
from mautrix.types import EventID, RoomID

from .sending import TXN_KEY, send_event

log = logging.getLogger("letterbox.send")

#: How far back (events of the same sender) a pending part is looked for after a crash.
RECOVERY_LOOKBACK = 200


def part_txn_id(key: bytes, receiver: str, message_id: str, part_id: str) -> str:
    """Keyed, so neither the homeserver nor a reader of the room can tell which mail an event
    came from by hashing guessed message IDs (the ID also stands in the clear in encrypted rooms)."""
    digest = hmac.new(key, "\0".join((receiver, message_id, part_id)).encode(), hashlib.sha256)
    return f"lbx{digest.hexdigest()[:40]}"


async def find_sent(intent: IntentAPI, room_id: RoomID, txn_id: str) -> EventID | None:
    """The event this sender already sent with `txn_id` among its recent events in the room."""
    query: dict[str, str] = {
        "dir": "b", "limit": "100",
        "filter": json.dumps({"senders": [intent.mxid], "lazy_load_members": True}),
    }
    seen = 0
    while seen < RECOVERY_LOOKBACK:
        # Raw JSON: typed content would not keep the marker of every event type.
        page = await intent.api.request(Method.GET, Path.v3.rooms[room_id].messages, query_params=query)
        chunk = page.get("chunk") or []
        for event in chunk:
            content = event.get("content")
            if isinstance(content, dict) and content.get(TXN_KEY) == txn_id:
                return EventID(event["event_id"])
        seen += len(chunk)
        if not chunk or not page.get("end"):
            return None
        query["from"] = page["end"]
    return None


async def send_part(intent: IntentAPI, room_id: RoomID, event_type: str, content: dict[str, Any],
                    *, txn_id: str, timestamp: int | None, recovering: bool) -> EventID:
    """Send one part; `recovering` says it may have been sent before the bridge stopped."""
    content = {**content, TXN_KEY: txn_id}
    if recovering:
        existing = await find_sent(intent, room_id, txn_id)
        if existing:
            log.info("Part %s was already in %s as %s; not sending it again", txn_id, room_id, existing)
            return existing
    return await send_event(intent, room_id, event_type, content, txn_id=txn_id, timestamp=timestamp)
