"""Between the inbox and the Matrix handler: encrypted events are decrypted, or answered.

The handler only ever sees plaintext events. An event that cannot be decrypted (after waiting
for its key and asking the sender's device for it) gets a notice in reply and a failed
`com.beeper.message_send_status`, so the user knows the message went nowhere; with encryption
turned off by the operator, an encrypted message gets a one-line notice saying so.

A decrypted message goes through the same secret scrubbing as a plaintext one at the intake
(`secret_input`): a password typed in an encrypted room is held in memory only, the same way.
The stored row holds the ciphertext until the event is handled, then nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import logging
from typing import Any

from mautrix.appservice import IntentAPI
from mautrix.types import EventType, RoomID

from .encryption import DecryptionFailed, Encryption
from .sending import TXN_KEY, send_event

log = logging.getLogger("letterbox.crypto.events")

SEND_STATUS = EventType.find("com.beeper.message_send_status", EventType.Class.MESSAGE)
ENCRYPTION_OFF = ("This room is encrypted, but encryption is turned off on this bridge "
                  "(encryption.allow), so I cannot read it; ask the operator, or use an "
                  "unencrypted room.")

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class EncryptedEventGate:
    """Wraps the Matrix handler: decrypts, tracks room encryption and membership for the crypto
    layer, and answers what cannot be read."""

    def __init__(self, encryption: Encryption | None, bot: Callable[[], IntentAPI],
                 is_bridge_puppet: Callable[[str], bool], handler: Handler, *,
                 scrub: Callable[[dict[str, Any]], dict[str, Any]] = lambda event: event) -> None:
        self.encryption = encryption
        self._bot = bot
        self._is_bridge_puppet = is_bridge_puppet
        self._handler = handler
        self._scrub = scrub

    async def handle(self, event: dict[str, Any]) -> None:
        if event.get("ephemeral"):
            await self._handler(event)
            return
        etype = event.get("type")
        enc = self.encryption
        content = event.get("content")
        if isinstance(content, dict) and TXN_KEY in content:
            return  # posted by the bridge itself (as a double-puppeted user): not an action

        if etype == "m.room.encryption" and event.get("state_key") == "" and enc is not None:
            enc.rooms.remember(RoomID(event["room_id"]), event.get("content") or {})
        elif etype == "m.room.member" and enc is not None:
            await enc.handle_member(event)
        elif etype == "m.room.encrypted":
            if self._is_bridge_puppet(str(event.get("sender", ""))):
                return
            if enc is None:
                await self._notice(event, ENCRYPTION_OFF)
                return
            try:
                event = await enc.decrypt(event)
            except DecryptionFailed as e:
                log.warning("Could not decrypt %s from %s in %s: %s", event.get("event_id"),
                            event.get("sender"), event.get("room_id"), e.reason)
                await self._undecryptable(event, e.reason)
                return
            event = self._scrub(event)
        await self._handler(event)

    async def _notice(self, event: dict[str, Any], text: str) -> None:
        await send_event(self._bot(), event["room_id"], EventType.ROOM_MESSAGE, {
            "msgtype": "m.notice", "body": text, "m.mentions": {},
            "m.relates_to": {"m.in_reply_to": {"event_id": event["event_id"]}},
        })

    async def _undecryptable(self, event: dict[str, Any], reason: str) -> None:
        await send_event(self._bot(), event["room_id"], SEND_STATUS, {
            "m.relates_to": {"rel_type": "m.reference", "event_id": event["event_id"]},
            "status": "FAIL_PERMANENT", "reason": "m.undecryptable",
            "message": f"Not delivered: {reason}",
        })
        await self._notice(event, f"I could not read your message: {reason}.")
