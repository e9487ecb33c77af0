"""End-to-bridge encryption: the bot's own device, encrypting, decrypting, encrypted media.

Built on mautrix-python's maintained crypto layer (`mautrix.crypto.OlmMachine` with
`PgCryptoStore`, its own version table `crypto_version`, on the bridge's database for SQLite and
PostgreSQL). The rest of the bridge only sees this module's small interface (`encrypt`, `decrypt`,
`encrypt_media`, `decrypt_media`, `handle_transaction`), and this module only uses mautrix's
interfaces (OlmMachine, CryptoStore, StateStore), so a vodozemac-backed implementation of them
can replace libolm (python-olm) without touching the bridge.

The device: created with PUT /devices per MSC4190 (or an `m.login.application_service` login),
its ID and keys kept in the crypto store across restarts. To-device events, device-list changes
and one-time-key counts arrive in appservice transactions (MSC2409/MSC3202) and are handed here by
the intake. A to-device message from the device to itself checks at start-up that the homeserver
delivers them; if not, one log line names the missing setting.

Olm pickles are encrypted with a key derived from `bridge.secrets.key`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass, field
import hashlib
import hmac
import logging
import secrets
from typing import Any, cast

from aiohttp import ClientSession
from mautrix.appservice import IntentAPI
from mautrix.client import Client
from mautrix.crypto import OlmMachine, PgCryptoStore, RejectKeyShare
from mautrix.crypto.attachments import decrypt_attachment, encrypt_attachment
from mautrix.errors import DecryptionError, EncryptionError, MatrixError, SessionNotFound
from mautrix.types import (
    JSON,
    ASToDeviceEvent,
    DeviceID,
    DeviceIdentity,
    DeviceLists,
    DeviceOTKCount,
    EncryptedEvent,
    EventType,
    LoginType,
    Membership,
    RequestedKeyInfo,
    RoomEncryptionStateEventContent,
    RoomID,
    RoomKeyWithheldCode,
    Serializable,
    TrustState,
    UserID,
)
from mautrix.util.async_db import Database

from .crypto_state import RoomEncryptionState, SharedRooms

log = logging.getLogger("letterbox.crypto")

DEVICE_NAME = "Letterbox bridge"
PROBE_TYPE = "net.letterbox.delivery_probe"
PROBE_WAIT_SECONDS = 15.0
# Never encrypted, per the spec: the server must read a redaction's target.
PLAIN_EVENT_TYPES = {EventType.ROOM_REDACTION}


class DecryptionFailed(Exception):
    """An encrypted event the bridge cannot read; `reason` is shown to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EncryptionUnavailable(Exception):
    """Encryption cannot start (one line for the operator: what to change)."""


@dataclass(slots=True)
class CryptoExtras:
    """The encryption parts of one appservice transaction."""

    to_device: list[dict[str, Any]] = field(default_factory=list)
    device_lists: DeviceLists | None = None
    otk_counts: dict[UserID, dict[DeviceID, DeviceOTKCount]] = field(default_factory=dict)
    has_otk_field: bool = False

    @classmethod
    def from_transaction(cls, body: dict[str, Any]) -> CryptoExtras:
        def pick(stable: str, unstable: str) -> Any:
            return body.get(stable, body.get(unstable))

        to_device = pick("to_device", "de.sorunome.msc2409.to_device") or []
        lists = pick("device_lists", "org.matrix.msc3202.device_lists")
        counts_raw = pick("device_one_time_keys_count", "org.matrix.msc3202.device_one_time_keys_count")
        counts: dict[UserID, dict[DeviceID, DeviceOTKCount]] = {}
        for user_id, devices in (counts_raw or {}).items():
            if isinstance(devices, dict):
                counts[UserID(user_id)] = {
                    DeviceID(d): DeviceOTKCount.deserialize(cast(JSON, c)) for d, c in devices.items()
                    if isinstance(c, dict)
                }
        return cls(
            to_device=[e for e in to_device if isinstance(e, dict)],
            device_lists=DeviceLists.deserialize(cast(JSON, lists)) if isinstance(lists, dict) else None,
            otk_counts=counts,
            has_otk_field=counts_raw is not None,
        )


def pickle_key(secrets_key_b64: str) -> str:
    """The olm pickle passphrase, derived from the bridge's secrets key (never stored)."""
    key = base64.b64decode(secrets_key_b64)
    return hmac.new(key, b"letterbox olm pickle key", hashlib.sha256).hexdigest()


class Encryption:
    """The bridge bot's device and everything the bridge does with encryption."""

    def __init__(
        self,
        *,
        database_url: str,
        db_args: dict[str, Any],
        bot_mxid: UserID,
        homeserver: str,
        as_token: str,
        secrets_key: str,
        msc4190: bool,
        allow_key_sharing: bool,
        decrypt_timeout: float,
        rotation_period_ms: int,
        rotation_messages: int,
        bot: Callable[[], IntentAPI],
        is_bridge_puppet: Callable[[str], bool],
        shared_rooms: SharedRooms,
    ) -> None:
        self.db = Database.create(database_url, upgrade_table=PgCryptoStore.upgrade_table,
                                  db_args=db_args, log=logging.getLogger("letterbox.db.crypto"))
        self.bot_mxid = bot_mxid
        self._homeserver = homeserver
        self._as_token = as_token
        self._pickle_key = pickle_key(secrets_key)
        self._msc4190 = msc4190
        self._allow_key_sharing = allow_key_sharing
        self.decrypt_timeout = decrypt_timeout
        self.rotation = RoomEncryptionStateEventContent(
            algorithm="m.megolm.v1.aes-sha2",  # type: ignore[arg-type]
            rotation_period_ms=rotation_period_ms, rotation_period_msgs=rotation_messages,
        )
        self._bot = bot
        self._is_bridge_puppet = is_bridge_puppet
        self.rooms = RoomEncryptionState(bot, shared_rooms)
        self.store = PgCryptoStore(bot_mxid, self._pickle_key, self.db)
        self.client: Client | None = None
        self._machine: OlmMachine | None = None
        self._share_locks: dict[RoomID, asyncio.Lock] = {}
        self._probe: asyncio.Future[CryptoExtras] | None = None

    @property
    def machine(self) -> OlmMachine:
        assert self._machine is not None, "encryption not started"
        return self._machine

    @property
    def device_id(self) -> DeviceID:
        assert self.client is not None, "encryption not started"
        return self.client.device_id

    # ---------------------------------------------------------------- lifecycle
    async def start(self, bridge_db: Database, session: ClientSession) -> None:
        self.db.override_pool(bridge_db)  # the crypto tables share the bridge's pool
        await self.db.start()
        await self.store.open()
        self.client = Client(mxid=self.bot_mxid, base_url=self._homeserver, token=self._as_token,
                             client_session=session, log=logging.getLogger("letterbox.crypto.http"))
        machine = OlmMachine(self.client, self.store, self.rooms,
                             log=logging.getLogger("letterbox.crypto.olm"))  # type: ignore[arg-type]
        machine.allow_key_share = self._allow_key_share
        # Room keys go to every device of the room's members, verified or not (mautrix's default);
        # forwarded keys on request only to devices cross-signed at least on first use.
        machine.send_keys_min_trust = TrustState.UNVERIFIED
        machine.share_keys_min_trust = TrustState.CROSS_SIGNED_TOFU
        self._machine = machine
        device_id = await self.store.get_device_id()
        await self._open_device(device_id)
        try:
            await machine.load()
        except Exception as e:  # an olm pickle that does not open with this key
            raise EncryptionUnavailable(
                "the crypto store cannot be opened with bridge.secrets.key "
                f"(was the key changed?): {e}") from None
        if not device_id:
            await self.store.put_device_id(self.client.device_id)
            log.info("Created the bridge's device %s", self.client.device_id)
        elif machine.account is not None and machine.account.shared:
            await self._check_keys_on_server()
        await machine.share_keys()
        log.info("End-to-bridge encryption ready: device %s of %s", self.client.device_id,
                 self.bot_mxid)

    async def _open_device(self, device_id: DeviceID | None) -> None:
        assert self.client is not None
        if self._msc4190:
            try:
                await self.client.create_device_msc4190(
                    device_id or DeviceID(secrets.token_urlsafe(8)), DEVICE_NAME)
            except MatrixError as e:
                raise EncryptionUnavailable(
                    f"the homeserver refused to create the bot's device per MSC4190 ({e}); set "
                    "`io.element.msc4190: true` in the registration or encryption.msc4190: false"
                ) from None
            return
        flows = await self.client.get_login_flows()
        if not flows.supports_type(LoginType.APPSERVICE):
            raise EncryptionUnavailable(
                "the homeserver offers no m.login.application_service login; enable MSC4190 "
                "(encryption.msc4190) or turn encryption.allow off")
        await self.client.login(login_type=LoginType.APPSERVICE, device_name=DEVICE_NAME,
                                device_id=device_id, store_access_token=True, update_hs_url=False)

    async def _check_keys_on_server(self) -> None:
        assert self.client is not None and self._machine is not None
        resp = await self.client.query_keys([self.bot_mxid])
        own = resp.device_keys.get(self.bot_mxid, {}).get(self.client.device_id)
        if own is None or not own.keys:
            log.warning("The homeserver lost the keys of device %s; uploading them again",
                        self.client.device_id)
            assert self._machine.account is not None
            self._machine.account.shared = False

    async def stop(self) -> None:
        await self.store.close()

    def probe_delivery(self, on_result: Callable[[str | None], None]) -> asyncio.Task[None]:
        """Send a to-device message to our own device and report what arrives (or not)."""
        async def run() -> None:
            self._probe = asyncio.get_running_loop().create_future()
            try:
                await self.machine.client.send_to_device(
                    EventType.find(PROBE_TYPE, EventType.Class.TO_DEVICE),
                    cast(Any, {self.bot_mxid: {self.device_id: {"nonce": secrets.token_hex(8)}}}))
                async with asyncio.timeout(PROBE_WAIT_SECONDS):
                    extras = await self._probe
            except TimeoutError:
                on_result("the homeserver does not send to-device events to the bridge; encrypted "
                          "rooms cannot work (Synapse: experimental_features."
                          "msc2409_to_device_messages_enabled and `receive_ephemeral` or "
                          "`de.sorunome.msc2409.push_ephemeral` in the registration)")
                return
            except Exception as e:
                on_result(f"could not check to-device delivery: {e}")
                return
            finally:
                self._probe = None
            if not extras.has_otk_field:
                on_result("the homeserver sends no one-time-key counts or device-list changes to "
                          "the bridge (Synapse: experimental_features.msc3202_transaction_extensions "
                          "and `org.matrix.msc3202: true` in the registration)")
                return
            on_result(None)
        return asyncio.create_task(run(), name="crypto-delivery-probe")

    # ---------------------------------------------------------------- transactions
    async def handle_transaction(self, extras: CryptoExtras) -> None:
        """To-device events, device lists and key counts of one transaction (errors are logged)."""
        machine = self.machine
        for raw in extras.to_device:
            if raw.get("type") == PROBE_TYPE and raw.get("sender") == self.bot_mxid:
                if self._probe is not None and not self._probe.done():
                    self._probe.set_result(extras)
                continue
            try:
                await machine.handle_as_to_device_event(
                    cast(ASToDeviceEvent, ASToDeviceEvent.deserialize(cast(JSON, raw))))
            except Exception:
                log.exception("Could not handle a %s to-device event from %s", raw.get("type"),
                              raw.get("sender"))
        if extras.device_lists is not None:
            try:
                await machine.handle_as_device_lists(extras.device_lists)
            except Exception:
                log.exception("Could not handle device list changes")
        if extras.otk_counts:
            try:
                await machine.handle_as_otk_counts(extras.otk_counts)
            except Exception:
                log.exception("Could not handle one-time key counts")

    async def handle_member(self, event: dict[str, Any]) -> None:
        """A membership change of a real user in an encrypted room ends the outbound session,
        so the next message is shared with exactly the room's new members."""
        target = str(event.get("state_key", ""))
        room_id = RoomID(str(event.get("room_id", "")))
        if self._is_bridge_puppet(target) or not await self.rooms.is_encrypted(room_id):
            return
        membership = (event.get("content") or {}).get("membership")
        previous = ((event.get("unsigned") or {}).get("prev_content") or {}).get("membership")
        if membership == previous or (previous, membership) == ("invite", "join"):
            return
        await self.store.remove_outbound_group_session(room_id)

    # ---------------------------------------------------------------- sending
    async def encrypt(self, room_id: RoomID, event_type: EventType, content: Any
                      ) -> tuple[EventType, dict[str, Any]]:
        """(m.room.encrypted, ciphertext) for an event in `room_id`, sharing a session if needed."""
        machine = self.machine
        if isinstance(content, Serializable):
            content = content.serialize()
        try:
            encrypted = await machine.encrypt_megolm_event(room_id, event_type, content)
        except EncryptionError:
            lock = self._share_locks.setdefault(room_id, asyncio.Lock())
            async with lock:
                if not await self.store.get_outbound_group_session(room_id):
                    users = await self._real_members(room_id)
                    log.debug("Sharing a new megolm session in %s with %s", room_id, users)
                    await machine.share_group_session(room_id, users)
            encrypted = await machine.encrypt_megolm_event(room_id, event_type, content)
        return EventType.ROOM_ENCRYPTED, encrypted.serialize()

    async def _real_members(self, room_id: RoomID) -> list[UserID]:
        """Joined and invited members who are not the bridge's own users (from the server)."""
        members = await self._bot().get_members(room_id)
        return [UserID(m.state_key) for m in members
                if getattr(m.content, "membership", None) in (Membership.JOIN, Membership.INVITE)
                and not self._is_bridge_puppet(m.state_key)]

    # ---------------------------------------------------------------- receiving
    async def decrypt(self, event: dict[str, Any]) -> dict[str, Any]:
        """The decrypted form of an m.room.encrypted event (waits for a late key, asks the
        sender's device for it), or DecryptionFailed."""
        try:
            evt = EncryptedEvent.deserialize(cast(JSON, event))
        except Exception:
            raise DecryptionFailed("the encrypted message is malformed") from None
        machine = self.machine
        try:
            try:
                result = await machine.decrypt_megolm_event(evt)
            except SessionNotFound as e:
                if not await self._wait_for_key(evt, e.session_id):
                    raise DecryptionFailed(
                        "the bridge did not receive the key for this message; send it again "
                        "(if it keeps happening, check that your client shares keys with the "
                        "bridge's device)") from None
                result = await machine.decrypt_megolm_event(evt)
        except DecryptionFailed:
            raise
        except DecryptionError as e:
            raise DecryptionFailed(f"the bridge could not decrypt this message ({e})") from None
        content = result.content.serialize() if isinstance(result.content, Serializable) \
            else dict(result.content)
        decrypted = {k: v for k, v in event.items() if k not in ("content", "type")}
        decrypted["type"] = str(result.type)
        decrypted["content"] = content
        decrypted["letterbox_decrypted"] = True
        return decrypted

    async def _wait_for_key(self, evt: EncryptedEvent, session_id: Any) -> bool:
        machine = self.machine
        half = self.decrypt_timeout / 2
        if await machine.wait_for_session(evt.room_id, session_id, timeout=half):
            return True
        # The deprecated sender_key/device_id fields are optional (clients on vodozemac omit
        # them): without a device ID, every device of the sender is asked.
        device_id = evt.content._device_id
        devices = [device_id] if device_id else list(await self.store.get_devices(evt.sender) or {})
        log.info("No key yet for %s in %s; asking %s's devices %s", evt.event_id, evt.room_id,
                 evt.sender, devices)
        try:
            return await machine.request_room_key(
                evt.room_id, evt.content._sender_key, session_id, {evt.sender: devices},
                timeout=half)
        except Exception:
            log.exception("Key request for %s failed", evt.event_id)
            return await self.store.has_group_session(evt.room_id, session_id)

    # ---------------------------------------------------------------- media
    @staticmethod
    def encrypt_media(data: bytes) -> tuple[bytes, dict[str, Any]]:
        """Ciphertext and the spec's `file` object (without `url`) for an encrypted upload."""
        ciphertext, info = encrypt_attachment(data)
        return ciphertext, info.serialize()

    @staticmethod
    def decrypt_media(ciphertext: bytes, file: dict[str, Any]) -> bytes:
        try:
            return decrypt_attachment(ciphertext, file["key"]["k"], file["hashes"]["sha256"],
                                      file["iv"])
        except (KeyError, TypeError):
            raise DecryptionFailed("the encrypted file's keys are incomplete") from None
        except DecryptionError as e:
            raise DecryptionFailed(f"the file could not be decrypted ({e})") from None

    # ---------------------------------------------------------------- key requests
    async def _allow_key_share(self, device: DeviceIdentity, request: RequestedKeyInfo) -> bool:
        who = f"{device.user_id}/{device.device_id}"
        if not self._allow_key_sharing:
            log.debug("Key request from %s ignored (encryption.allow_key_sharing is off)", who)
            return False
        if device.trust == TrustState.BLACKLISTED:
            raise RejectKeyShare(f"blacklisted device {who}", code=RoomKeyWithheldCode.BLACKLISTED,
                                 reason="Your device is blacklisted by the bridge")
        if await self.machine.resolve_trust(device) < self.machine.share_keys_min_trust:
            raise RejectKeyShare(f"unverified device {who}", code=RoomKeyWithheldCode.UNVERIFIED,
                                 reason="Your device is not verified")
        if device.user_id not in await self._real_members(request.room_id):
            raise RejectKeyShare(f"{who} is not in {request.room_id}",
                                 code=RoomKeyWithheldCode.UNAUTHORIZED,
                                 reason="You are not in that room")
        return True
