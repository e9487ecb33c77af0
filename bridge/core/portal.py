"""A remote chat and its Matrix room: creation, an ordered queue of remote events, relations."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import copy
from dataclasses import dataclass
from datetime import datetime
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from mautrix.api import Method, Path
from mautrix.appservice import IntentAPI
from mautrix.errors import MNotFound, MTooLarge
from mautrix.types import EventID, EventType, RoomCreatePreset, RoomID, UserID

from ..db import MessageRow, PendingPart, PortalRow
from ..network import (
    ChatInfo,
    MessageID,
    PortalRef,
    RemoteChatInfoChange,
    RemoteDelete,
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteReaction,
    RemoteReadReceipt,
)
from ..network.events import MediaUpload
from ..network.placeholders import substitute_placeholders
from .encrypted_media import attach_files, split_inline_images
from .encryption import Encryption
from .part_sender import part_txn_id, send_part
from .sending import send_event
from .upload_limit import replace_too_large

if TYPE_CHECKING:
    from .bridge import Bridge
    from .user_login import UserLogin

log = logging.getLogger("letterbox.portal")

#: Portal metadata key: a room is being created for the portal (see `Portal._create_room`).
CREATING_ROOM = "creating_room"
#: Key in the m.bridge content of a portal room: the creation attempt that made it.
CREATING_ROOM_KEY = "net.letterbox.creation"

@dataclass(slots=True)
class _Job:
    run: Callable[[], Awaitable[None]]
    done: asyncio.Future[None]


class Portal:
    """Remote events for one portal are applied strictly in order by a single worker."""

    def __init__(self, bridge: Bridge, row: PortalRow, login: UserLogin) -> None:
        self.bridge = bridge
        self.row = row
        self.login = login
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._room_lock = asyncio.Lock()

    @property
    def room_id(self) -> str | None:
        return self.row.mxid

    def ref(self) -> PortalRef:
        return PortalRef(
            portal_id=self.row.id,  # type: ignore[arg-type]
            room_id=self.row.mxid or "",
            is_direct=self.row.is_direct,
            metadata=self.row.metadata,
        )

    # ---------------------------------------------------------------- queue
    async def enqueue(self, run: Callable[[], Awaitable[None]]) -> None:
        """Run `run` after everything queued before it; wait for it and re-raise its error."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(run, done))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"portal-{self.row.id}")
        await done

    @property
    def queued(self) -> int:
        """Jobs waiting behind the one being handled."""
        return self._queue.qsize()

    async def _work(self) -> None:
        while not self._queue.empty():
            job = await self._queue.get()
            try:
                await job.run()
            except Exception as e:
                if not job.done.done():
                    job.done.set_exception(e)
            else:
                if not job.done.done():
                    job.done.set_result(None)

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    # ---------------------------------------------------------------- remote -> Matrix
    async def handle_remote(self, event: RemoteEvent) -> None:
        if isinstance(event, RemoteMessage):
            await self._remote_message(event)
        elif isinstance(event, RemoteEdit):
            await self._remote_edit(event)
        elif isinstance(event, RemoteReaction):
            await self._remote_reaction(event)
        elif isinstance(event, RemoteDelete):
            await self._remote_delete(event)
        elif isinstance(event, RemoteReadReceipt):
            await self._remote_read_receipt(event)
        elif isinstance(event, RemoteChatInfoChange):
            await self._apply_info(event.info)
        else:
            log.warning("Portal %s: remote event %s is not handled", self.row.id, type(event).__name__)

    async def _remote_message(self, evt: RemoteMessage) -> None:
        """Post every part not yet in Matrix, each exactly once (see `part_sender`)."""
        login_id = self.login.id
        messages = self.bridge.messages
        done = {row.part_id for row in await messages.parts(login_id, evt.message_id)}
        # A pending part keeps the transaction ID it was first sent with (whatever key is current).
        pending = {p.part_id: p.txn_id
                   for p in await self.bridge.pending_parts.of_message(login_id, evt.message_id)}
        if done and not pending:
            log.debug("Message %s already bridged, skipping", evt.message_id)
            return
        parts = [(part.part_id or str(index), part) for index, part in enumerate(evt.parts)]
        if all(part_id in done for part_id, _ in parts):
            return
        await self.ensure_room(evt.chat_info, evt.sender)
        assert self.row.mxid
        room = RoomID(self.row.mxid)
        intent = await self._sender_intent(evt)
        await intent.ensure_joined(room)
        encryption = self.bridge.encryption
        encrypted = encryption is not None and await encryption.rooms.is_encrypted(room)
        if encrypted:
            parts = split_inline_images(parts, {u.key: u for u in evt.uploads})
        mapping, files, too_large = await self._upload(intent, evt.uploads, encrypted=encrypted)
        parts = replace_too_large(parts, too_large, await self.bridge.upload_limit.get())
        todo = [(part_id, part) for part_id, part in parts if part_id not in done]
        root_event, reply_event, root_id = await self._resolve_relations(evt.thread_root, evt.reply_to)
        ts = _ms(evt.timestamp)
        txn_ids = {part_id: pending.get(part_id) or part_txn_id(
            self.bridge.txn_key, login_id, evt.message_id, part_id) for part_id, _ in todo}
        await self.bridge.pending_parts.begin([
            PendingPart(receiver=login_id, id=evt.message_id, part_id=part_id, portal_id=self.row.id,
                        room_id=room, txn_id=txn_ids[part_id])
            for part_id, _ in todo
        ])  # parts pending since an earlier attempt keep their row
        for part_id, part in todo:
            content = attach_files(copy.deepcopy(part.content), files)
            content = substitute_placeholders(content, mapping)
            if root_event:
                relates: dict[str, Any] = {
                    "rel_type": "m.thread",
                    "event_id": root_event,
                    "is_falling_back": reply_event is None,
                    "m.in_reply_to": {"event_id": reply_event or root_event},
                }
                content["m.relates_to"] = relates
            elif reply_event:
                content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_event}}
            event_id = await send_part(
                intent, room, part.event_type, content,
                txn_id=txn_ids[part_id], timestamp=ts,
                recovering=part_id in pending,
            )
            await self.bridge.pending_parts.complete(
                MessageRow(
                    receiver=login_id,
                    portal_id=self.row.id,
                    id=evt.message_id,
                    part_id=part_id,
                    mxid=event_id,
                    room_id=room,
                    sender_id=evt.sender,
                    timestamp=ts or int(time.time() * 1000),
                    thread_root=root_id or evt.message_id,
                )
            )

    async def _sender_intent(self, evt: RemoteMessage) -> IntentAPI:
        """Who posts a message: the user's own Matrix account for what they wrote elsewhere
        (double puppeting, when configured), else the sender's ghost."""
        if evt.from_self:
            puppet = await self.bridge.double_puppet(self.login.row.user_mxid)
            if puppet is not None:
                return puppet
        return await self.bridge.ghosts.intent_for(evt.sender, evt.sender_info)

    async def _target(self, evt: RemoteEdit | RemoteReaction | RemoteDelete | RemoteReadReceipt
                      ) -> tuple[MessageRow, IntentAPI] | None:
        """The bridged message an event refers to, and the sender's ghost (joined)."""
        target = await self.bridge.messages.first_part(self.login.id, evt.target)
        if target is None or not self.row.mxid:
            log.warning("Portal %s: %s refers to unknown message %s", self.row.id,
                        type(evt).__name__, evt.target)
            return None
        intent = await self.bridge.ghosts.intent_for(evt.sender, evt.sender_info)
        await intent.ensure_joined(RoomID(self.row.mxid))
        return target, intent

    async def _remote_edit(self, evt: RemoteEdit) -> None:
        found = await self._target(evt)
        if found is None or not evt.parts:
            return
        target, intent = found
        new_content = copy.deepcopy(evt.parts[0].content)
        content = {**new_content, "body": "* " + str(new_content.get("body", "")),
                   "m.new_content": new_content,
                   "m.relates_to": {"rel_type": "m.replace", "event_id": target.mxid}}
        if "formatted_body" in new_content:
            content["formatted_body"] = "* " + str(new_content["formatted_body"])
        await send_event(intent, target.room_id, EventType.ROOM_MESSAGE, content,
                         timestamp=_ms(evt.timestamp))

    async def _remote_reaction(self, evt: RemoteReaction) -> None:
        found = await self._target(evt)
        if found is None:
            return
        target, intent = found
        await send_event(intent, target.room_id, EventType.REACTION, {
            "m.relates_to": {"rel_type": "m.annotation", "event_id": target.mxid, "key": evt.key}
        }, timestamp=_ms(evt.timestamp))

    async def _remote_delete(self, evt: RemoteDelete) -> None:
        found = await self._target(evt)
        if found is None:
            return
        target, intent = found
        await intent.redact(RoomID(target.room_id), EventID(target.mxid))

    async def _remote_read_receipt(self, evt: RemoteReadReceipt) -> None:
        if evt.from_self:
            await self._own_read_marker(evt)
            return
        found = await self._target(evt)
        if found is None:
            return
        target, intent = found
        await intent.mark_read(RoomID(target.room_id), EventID(target.mxid))

    async def _own_read_marker(self, evt: RemoteReadReceipt) -> None:
        """The user read a message elsewhere: their read receipt and fully-read marker move to
        its last event, set as their own account (double puppeting). Without double puppeting
        the bridge cannot act for the user, and nothing happens."""
        puppet = await self.bridge.double_puppet(self.login.row.user_mxid)
        if puppet is None:
            log.debug("Portal %s: %s read elsewhere; no double puppet to mark it", self.row.id,
                      evt.target)
            return
        parts = await self.bridge.messages.parts(self.login.id, evt.target)
        if not parts:
            log.warning("Portal %s: read marker for unknown message %s", self.row.id, evt.target)
            return
        last = max(parts, key=lambda p: (len(p.part_id), p.part_id))
        await puppet.mark_read(RoomID(last.room_id), EventID(last.mxid))

    async def _upload(self, intent: IntentAPI, uploads: list[MediaUpload], *, encrypted: bool
                      ) -> tuple[dict[str, str], dict[str, dict[str, Any]], dict[str, MediaUpload]]:
        """Upload the files: plain (key -> mxc URL), or in an encrypted room encrypted (key -> the
        spec's `file` object; the server sees neither name nor type). Those over the homeserver's
        limit are not uploaded but returned (an inline reference to one becomes an empty URL; its
        part says why)."""
        mapping: dict[str, str] = {}
        files: dict[str, dict[str, Any]] = {}
        too_large: dict[str, MediaUpload] = {}
        limit = await self.bridge.upload_limit.get()
        for upload in uploads:
            if limit is not None and len(upload.data) > limit:
                too_large[upload.key] = upload
                continue
            try:
                if encrypted:
                    ciphertext, file = Encryption.encrypt_media(upload.data)
                    file["url"] = await intent.upload_media(
                        ciphertext, mime_type="application/octet-stream")
                    files[upload.key] = file
                else:
                    mapping[upload.key] = await intent.upload_media(
                        upload.data, mime_type=upload.mimetype, filename=upload.filename
                    )
            except MTooLarge:
                too_large[upload.key] = upload
        for key, upload in too_large.items():
            log.warning("Portal %s: %s (%d bytes) is over the upload limit (%s); not uploaded",
                        self.row.id, upload.filename, len(upload.data), limit)
            mapping[key] = ""
        return mapping, files, too_large

    async def _resolve_relations(
        self, thread_root: MessageID | None, reply_to: MessageID | None
    ) -> tuple[str | None, str | None, str | None]:
        """Matrix event IDs of the thread root and the replied-to message, and the root's remote ID."""
        messages = self.bridge.messages
        reply_row = await messages.first_part(self.login.id, reply_to) if reply_to else None
        root_row = await messages.first_part(self.login.id, thread_root) if thread_root else None
        if root_row is None and reply_row is not None:
            root_id = reply_row.thread_root or reply_row.id
            root_row = await messages.first_part(self.login.id, root_id)
        if root_row is not None and root_row.thread_root and root_row.thread_root != root_row.id:
            # The referenced "root" is itself inside a thread: use that thread's root.
            outer = await messages.first_part(self.login.id, root_row.thread_root)
            root_row = outer or root_row
        if root_row is None or root_row.room_id != self.row.mxid:
            return None, reply_row.mxid if reply_row and reply_row.room_id == self.row.mxid else None, None
        reply_event = reply_row.mxid if reply_row and reply_row.room_id == self.row.mxid else None
        return root_row.mxid, reply_event, root_row.id

    # ---------------------------------------------------------------- room
    async def ensure_room(self, info: ChatInfo | None, creator_hint: str | None = None) -> str:
        async with self._room_lock:
            if self.row.mxid:
                return self.row.mxid
            info = info or ChatInfo()
            try:
                await self.bridge.ensure_space(self.login)
            except Exception:
                log.exception("Could not create the space of %s; the room is created without it", self.login.id)
            self.row.mxid = await self._create_room(info, creator_hint)
            self.row.metadata.pop(CREATING_ROOM, None)
            self.row.name = room_name(info) or ""
            self.row.topic = info.topic or ""
            self.row.is_direct = info.is_direct
            await self.bridge.portals_table.upsert(self.row)
            await self.bridge.add_to_space(self.login, self)
            return self.row.mxid

    async def _create_room(self, info: ChatInfo, creator_hint: str | None) -> str:
        bridge = self.bridge
        ghost_ids = [m.user_id for m in info.members if not m.is_self]
        ghost_intents = [
            await bridge.ghosts.intent_for(m.user_id, m.info) for m in info.members if not m.is_self
        ]
        # A direct chat is created by the correspondent's ghost, so clients show it as a DM with them.
        creator = ghost_intents[0] if info.is_direct and ghost_intents else bridge.bot
        bot_mxid = bridge.bot.mxid
        invitees = [UserID(self.login.row.user_mxid)]
        invitees += [i.mxid for i in ghost_intents if i.mxid != creator.mxid]
        if creator.mxid != bot_mxid:
            invitees.append(bot_mxid)
        state_key = f"net.letterbox://{bridge.connector.name}/{self.row.receiver}/{self.row.id}"
        bridge_info = {
            "bridgebot": bot_mxid,
            "creator": bot_mxid,
            "protocol": {"id": bridge.connector.name, "displayname": bridge.connector.display_name},
            "channel": {"id": self.row.id, "displayname": room_name(info) or info.topic
                        or f"{bridge.connector.display_name} chat"},
        }
        initial_state: list[dict[str, Any]] = [
            {"type": "m.bridge", "state_key": state_key, "content": bridge_info},
            {"type": "uk.half-shot.bridge", "state_key": state_key, "content": bridge_info},
        ]
        space = self.login.row.space_room
        if space:
            initial_state.append(
                {"type": "m.space.parent", "state_key": space,
                 "content": {"via": [bridge.domain], "canonical": True}}
            )
        initial_state += bridge.encryption_state()
        users = {bot_mxid: 100, self.login.row.user_mxid: 50}
        if bridge.creators_listed_in_power_levels:
            users[creator.mxid] = 100
        elif creator.mxid == bot_mxid:
            del users[bot_mxid]
        power = {
            "users": users,
            "events": {"m.bridge": 100, "uk.half-shot.bridge": 100, "m.room.power_levels": 100},
        }
        # A crash between the homeserver creating the room and the row naming it must not leave
        # the portal with two rooms: the attempt is recorded first, and a second attempt looks
        # for the room the first one made (by its m.bridge state key) before creating another.
        attempt = self.row.metadata.get(CREATING_ROOM)
        room_id = await self._room_created_before(creator, state_key, attempt) if attempt else None
        if room_id is None:
            attempt = self.row.metadata[CREATING_ROOM] = secrets.token_hex(8)
            await bridge.portals_table.upsert(self.row)
            for event in initial_state[:2]:  # m.bridge and its older name say which attempt made it
                event["content"] = {**event["content"], CREATING_ROOM_KEY: attempt}
            room_id = await creator.create_room(
                name=room_name(info),
                topic=info.topic or None,
                is_direct=info.is_direct,
                invitees=invitees,
                preset=RoomCreatePreset.PRIVATE,
                initial_state=initial_state,
                power_level_override=power,
            )
            log.info("Created room %s for portal %s of %s (ghosts %s)", room_id, self.row.id,
                     self.login.id, ghost_ids)
        else:
            log.info("Portal %s of %s: adopting room %s, created before a restart", self.row.id,
                     self.login.id, room_id)
        bridge.room_created(room_id, initial_state)
        for intent in [bridge.bot, *ghost_intents]:
            if intent.mxid != creator.mxid:
                await intent.ensure_joined(room_id)
        return room_id

    async def _room_created_before(self, creator: IntentAPI, state_key: str, attempt: str
                                   ) -> RoomID | None:
        """The room `creator` is in whose m.bridge state names this portal and `attempt`."""
        for room_id in await creator.get_joined_rooms():
            if await self.bridge.portals_table.by_mxid(room_id) is not None:
                continue
            try:
                state = await creator.api.request(
                    Method.GET, Path.v3.rooms[room_id].state["m.bridge"][state_key])
            except MNotFound:
                continue
            if state.get(CREATING_ROOM_KEY) == attempt:
                return room_id
        return None

    async def _apply_info(self, info: ChatInfo) -> None:
        if not self.row.mxid:
            return
        room = RoomID(self.row.mxid)
        if info.name and info.name != self.row.name and not self.row.is_direct:
            await self.bridge.bot.set_room_name(room, info.name)
            self.row.name = info.name
        if info.topic is not None and info.topic != self.row.topic:
            await self.bridge.bot.set_room_topic(room, info.topic)
            self.row.topic = info.topic
        for member in info.members:
            if not member.is_self:
                intent = await self.bridge.ghosts.intent_for(member.user_id, member.info)
                await self.bridge.bot.invite_user(room, intent.mxid)
                await intent.ensure_joined(room)
        await self.bridge.portals_table.upsert(self.row)



def room_name(info: ChatInfo) -> str | None:
    """The room's name: the chat's own, or for a direct chat the other person's (without one,
    clients would name it after every member, the bridge bot included)."""
    if info.name or not info.is_direct:
        return info.name or None
    return next((m.info.name for m in info.members if not m.is_self and m.info and m.info.name), None)


def _ms(when: datetime | None) -> int | None:
    return int(when.timestamp() * 1000) if when else None
