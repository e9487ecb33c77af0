"""The appservice API with the one place where the bridge's Matrix events are encrypted.

Every message event the bridge sends — the bot's notices and send statuses, ghosts' messages,
edits and reactions — goes through `IntentAPI.send_message_event`. `EncryptingIntent` overrides
exactly that method: in an encrypted room the event is encrypted with the bridge's device before
it leaves. Redactions (the server must read them) and state events stay in the clear, as the spec
requires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from mautrix.appservice import AppServiceAPI, IntentAPI
from mautrix.types import EventID, EventType, RoomID, UserID
from yarl import URL

from .sending import TXN_KEY

if TYPE_CHECKING:
    from .encryption import Encryption


class EncryptingIntent(IntentAPI):
    encryption: Encryption | None = None

    async def send_message_event(  # type: ignore[override]
        self, room_id: RoomID, event_type: EventType, content: Any, **kwargs: Any
    ) -> EventID:
        enc = self.encryption
        if (enc is not None and event_type != EventType.ROOM_ENCRYPTED
                and event_type != EventType.ROOM_REDACTION and await enc.rooms.is_encrypted(room_id)):
            marker = content.get(TXN_KEY) if isinstance(content, dict) else None
            event_type, content = await enc.encrypt(room_id, event_type, content)
            if marker is not None:  # beside the ciphertext: a resend after a crash looks for it
                content[TXN_KEY] = marker
        return await super().send_message_event(room_id, event_type, content, **kwargs)


class BridgeAppServiceAPI(AppServiceAPI):
    """Hands out `EncryptingIntent`s; `encryption` is set once the bot's device is ready."""

    encryption: Encryption | None = None

    def bot_intent(self) -> IntentAPI:
        if not self._bot_intent:
            intent = EncryptingIntent(self.bot_mxid, self, state_store=self.state_store)
            intent.encryption = self.encryption
            self._bot_intent = intent
        return cast(IntentAPI, self._bot_intent)

    def intent(self, user: UserID | None = None, token: str | None = None,
               base_url: str | None = None, real_user_as_token: bool = False) -> IntentAPI:
        assert user is not None
        api = self.real_user(user, token, URL(base_url) if base_url else None,
                             as_token=real_user_as_token) if token \
            else self.user(user)
        intent = EncryptingIntent(user, api, self.bot_intent(), self.state_store)
        intent.encryption = self.encryption
        return intent

    def set_encryption(self, encryption: Encryption | None) -> None:
        self.encryption = encryption
        if self._bot_intent is not None:
            self._bot_intent.encryption = encryption
