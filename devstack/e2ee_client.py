"""A Matrix user with end-to-end encryption, played by matrix-nio (vodozemac), a client this
project did not write. Used by the E2EE tests and the demo.

`sync()` also does the key bookkeeping a real client does between syncs: upload its keys, query
the devices of the people in its rooms, claim one-time keys and send queued to-device messages.
Every decrypted timeline event is kept as nio's event object; undecryptable ones stay
`MegolmEvent`s, so a test can tell the difference.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
import time
from typing import Any
from urllib.parse import quote

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    Event,
    LoginResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomPreset,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)
from nio.crypto.attachments import decrypt_attachment

ENCRYPTION_STATE = {"type": "m.room.encryption", "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


class E2EEUser:
    """One device of one Matrix user, its keys kept in `store_dir`."""

    def __init__(self, hs_url: str, user_id: str, store_dir: Path) -> None:
        store_dir.mkdir(parents=True, exist_ok=True)
        self.hs_url = hs_url.rstrip("/")
        self.client = AsyncClient(
            self.hs_url, user_id, store_path=str(store_dir),
            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True),
        )
        self.events: dict[str, list[Event]] = {}
        self.invites: set[str] = set()
        self.direct_invites: set[str] = set()

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    async def login(self, password: str) -> None:
        resp = await self.client.login(password, device_name="nio test device")
        if not isinstance(resp, LoginResponse):
            raise RuntimeError(f"login failed: {resp}")
        await self.sync()

    async def close(self) -> None:
        await self.client.close()

    async def sync(self, timeout_ms: int = 0) -> None:
        client = self.client
        resp = await client.sync(timeout=timeout_ms, full_state=client.next_batch is None)
        if not isinstance(resp, SyncResponse):
            raise RuntimeError(f"sync failed: {resp}")
        for room_id, room in resp.rooms.join.items():
            self.events.setdefault(room_id, []).extend(room.timeline.events)
        for room_id, invite in resp.rooms.invite.items():
            self.invites.add(room_id)
            for ev in invite.invite_state:
                source = getattr(ev, "source", {}) or {}
                content = getattr(ev, "content", None) or {}  # nio moves it out of `source`
                if source.get("type") == "m.room.member" and source.get("state_key") == self.user_id \
                        and content.get("is_direct"):
                    self.direct_invites.add(room_id)
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())
        await client.send_to_device_messages()

    async def wait_for(self, find: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = find()
            if found:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or 'condition'} not met within {timeout:.0f}s")
            await self.sync(timeout_ms=500)

    async def wait_for_async(self, check: Callable[[], Awaitable[bool]], timeout: float = 20.0,
                             what: str = "") -> None:
        """Sync until `check()` (an outside observation, e.g. of the bridge) holds."""
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or 'condition'} not met within {timeout:.0f}s")
            await self.sync(timeout_ms=500)

    async def wait_for_event(self, room_id: str, pred: Callable[[Event], bool],
                             timeout: float = 20.0, what: str = "") -> Event:
        try:
            return await self.wait_for(
                lambda: next((e for e in self.events.get(room_id, []) if pred(e)), None), timeout,
                what or f"event in {room_id}")
        except TimeoutError as e:
            seen = [f"{type(ev).__name__}:{ev.source.get('type')}" for ev in self.events.get(room_id, [])]
            raise TimeoutError(f"{e}; events seen: {seen}") from None

    async def wait_for_direct_invite(self, exclude: set[str] | None = None,
                                     timeout: float = 20.0) -> str:
        """The next invite to a direct chat (nio keeps no `m.room.create` of invites, so a
        space cannot be told from a group room; a direct chat can)."""
        def find() -> str | None:
            fresh = self.direct_invites - set(self.client.rooms) - (exclude or set())
            return next(iter(sorted(fresh)), None)
        return str(await self.wait_for(find, timeout, "an invite"))

    async def join(self, room_id: str) -> None:
        await self.client.join(room_id)
        await self.sync()

    async def create_encrypted_dm(self, invitee: str) -> str:
        resp = await self.client.room_create(is_direct=True, invite=[invitee],
                                             preset=RoomPreset.trusted_private_chat,
                                             initial_state=[ENCRYPTION_STATE])
        if not isinstance(resp, RoomCreateResponse):
            raise RuntimeError(f"room creation failed: {resp}")
        await self.sync()
        return str(resp.room_id)

    async def send(self, room_id: str, content: dict[str, Any],
                   event_type: str = "m.room.message") -> str:
        await self.sync()
        resp = await self.client.room_send(room_id, event_type, content,
                                           ignore_unverified_devices=True)
        if not isinstance(resp, RoomSendResponse):
            raise RuntimeError(f"send failed: {resp}")
        return str(resp.event_id)

    async def send_raw(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        """Send `content` exactly as given (no encryption by the client)."""
        url = (f"{self.hs_url}/_matrix/client/v3/rooms/{quote(room_id)}/send/{quote(event_type)}/"
               f"raw{time.time_ns()}")
        async with aiohttp.ClientSession() as session, session.put(
                url, json=content,
                headers={"Authorization": f"Bearer {self.client.access_token}"}) as resp:
            resp.raise_for_status()
            return str((await resp.json())["event_id"])

    async def send_text(self, room_id: str, body: str) -> str:
        return await self.send(room_id, {"msgtype": "m.text", "body": body})

    async def upload_encrypted(self, data: bytes, mimetype: str, filename: str) -> dict[str, Any]:
        """The spec's `file` object of an encrypted upload."""
        resp, keys = await self.client.upload(lambda *_: data, content_type="application/octet-stream",
                                              filename=filename, encrypt=True, filesize=len(data))
        if not isinstance(resp, UploadResponse) or keys is None:
            raise RuntimeError(f"upload failed: {resp}")
        return {"url": resp.content_uri, **keys}

    async def download(self, mxc: str) -> bytes:
        server, media_id = mxc.removeprefix("mxc://").split("/", 1)
        url = f"{self.hs_url}/_matrix/client/v1/media/download/{quote(server)}/{quote(media_id)}"
        async with aiohttp.ClientSession() as session, session.get(
                url, headers={"Authorization": f"Bearer {self.client.access_token}"}) as resp:
            resp.raise_for_status()
            return await resp.read()

    async def download_decrypted(self, file: dict[str, Any]) -> bytes:
        ciphertext = await self.download(file["url"])
        return bytes(decrypt_attachment(ciphertext, file["key"]["k"], file["hashes"]["sha256"],
                                        file["iv"]))

    def undecryptable(self, room_id: str) -> list[MegolmEvent]:
        return [e for e in self.events.get(room_id, []) if isinstance(e, MegolmEvent)]

    def notices(self, room_id: str, sender: str) -> list[str]:
        """Bodies of the (decrypted) notices `sender` sent to `room_id`."""
        return [e.source["content"].get("body", "") for e in self.events.get(room_id, [])
                if e.sender == sender and getattr(e, "source", None)
                and e.source.get("type") == "m.room.message"
                and e.source["content"].get("msgtype") == "m.notice"]

    async def wait_notice(self, room_id: str, sender: str, text: str, timeout: float = 20.0) -> str:
        def find() -> str | None:
            return next((n for n in self.notices(room_id, sender) if text in n), None)
        try:
            return str(await self.wait_for(find, timeout, f"notice {text!r}"))
        except TimeoutError:
            raise TimeoutError(f"notice {text!r} not seen; notices: {self.notices(room_id, sender)}; "
                               f"undecryptable: {len(self.undecryptable(room_id))}") from None
