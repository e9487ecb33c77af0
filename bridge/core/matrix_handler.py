"""Matrix events from the homeserver: invites, commands, and user actions in portals."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mautrix.errors import MatrixError
from mautrix.types import EventType, RoomID

from ..db import MessageRow
from ..network import (
    ConnectorError,
    EditHandler,
    LoginState,
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixReadReceipt,
    MatrixRedaction,
    MessageID,
    ReactionHandler,
    ReadReceiptHandler,
    RedactionHandler,
)
from .commands import COMMAND_PREFIX, CommandProcessor, command_text
from .permissions import Level
from .secret_input import is_scrubbed
from .sending import send_event
from .threads import ThreadOrderUnavailable, latest_before
from .user import User

if TYPE_CHECKING:
    from .bridge import Bridge
    from .portal import Portal

log = logging.getLogger("letterbox.matrix")

_TEXT_TYPES = ("m.text", "m.notice")


class MatrixHandler:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.commands = CommandProcessor(bridge)

    async def handle(self, event: dict[str, Any]) -> None:
        etype = event.get("type")
        if event.get("ephemeral"):
            if etype == "m.receipt":
                await self._receipts(event)
            return
        sender = event.get("sender", "")
        if self.bridge.is_bridge_puppet(sender):
            return
        if etype == "m.room.member":
            await self._member(event)
        elif etype in ("m.room.message", "m.sticker"):
            await self._message(event)
        elif etype == "m.reaction":
            await self._reaction(event)
        elif etype == "m.room.redaction":
            await self._redaction(event)

    # ---------------------------------------------------------------- membership
    async def _member(self, event: dict[str, Any]) -> None:
        content = event.get("content", {})
        target = event.get("state_key", "")
        room_id = RoomID(event["room_id"])
        if content.get("membership") != "invite":
            if content.get("membership") == "leave" and target == event.get("sender"):
                if await self.bridge.management_owner(room_id) == target:
                    await self.bridge.forget_management_room(await self.bridge.get_user(target), room_id)
            return
        user = await self.bridge.get_user(event["sender"])
        if target == self.bridge.bot_mxid:
            if user.level < Level.USER:
                log.info("Rejecting invite from %s (no permission)", user.mxid)
                await self.bridge.bot.leave_room(room_id, reason="You are not allowed to use this bridge.")
                return
            await self.bridge.bot.join_room_by_id(room_id)
            members = await self.bridge.bot.get_joined_members(room_id)
            if content.get("is_direct") or len(members) <= 2:
                await self.bridge.add_management_room(user, room_id)
                await self.bridge.bot.send_notice(
                    room_id, "Hello! I am the Letterbox bridge bot. Send `help` for the commands."
                )
            return
        network_id = self.bridge.ghosts.network_id(target)
        if network_id is not None:
            # Never register an account because someone invited it: only ghosts the bridge made
            # answer, and only to people allowed to use the bridge.
            if user.level < Level.USER:
                log.info("Ignored invite of %s by %s (no permission)", target, user.mxid)
                return
            if await self.bridge.ghosts.table.get(network_id) is None:
                log.info("Ignored invite of unknown ghost %s by %s", target, user.mxid)
                await self.bridge.notify_user(user.mxid, (
                    f"You invited {target}, who has not written to this bridge. To write to "
                    "someone new, send `start-chat <address>` here."))
                return
            intent = self.bridge.az.intent(target)  # type: ignore[union-attr]
            await intent.ensure_registered()
            await intent.join_room_by_id(room_id)
            await intent.leave_room(
                room_id, reason="To write to someone, use `start-chat <address>` with the bridge bot."
            )

    # ---------------------------------------------------------------- messages
    async def _message(self, event: dict[str, Any]) -> None:
        room_id = RoomID(event["room_id"])
        user = await self.bridge.get_user(event["sender"])
        if is_scrubbed(event.get("content", {})):
            held = self.bridge.secret_input.recover(event)
            if held is None:
                await self._secret_lost(user, room_id, event["event_id"])
                return
            event = {**event, "content": held}
        content = event.get("content", {})
        body = content.get("body", "") if isinstance(content.get("body"), str) else ""
        try:
            await self._dispatch_message(user, event, body)
        finally:
            if self.bridge.secret_input.is_login_command(body):
                self.bridge.secret_input.disarm(room_id, user.mxid)
        self.bridge.secret_input.forget(event["event_id"])  # handled: a retry would not need it

    async def _dispatch_message(self, user: User, event: dict[str, Any], body: str) -> None:
        room_id = RoomID(event["room_id"])
        event_id = event["event_id"]
        content = event.get("content", {})
        command = command_text(body)
        if await self.bridge.management_owner(room_id) == user.mxid:
            if (content.get("m.relates_to") or {}).get("rel_type") == "m.replace":
                await self.commands.reply(room_id, "Edited messages are not read as commands; "
                                                   "send the command again.")
                return
            if event.get("type") != "m.room.message" or content.get("msgtype") not in _TEXT_TYPES:
                await self.commands.reply(room_id, "I only understand text: send `help` for the commands.")
                return
            await self.commands.handle(user, room_id, event_id, body if command is None else command,
                                       management=True)
            return
        if command is not None and self.bridge.secret_input.holds_inline_secret(command):
            # `!lb login password=...` outside the management room: not for a room to keep
            await self.commands.redact_secret(room_id, event_id)
        portal = await self.bridge.portal_by_room(room_id)
        if command is not None:  # a command is never sent to the network, in any room
            await self.commands.handle(user, room_id, event_id, command, management=False,
                                       portal=portal)
            return
        if portal is None:
            retired = await self.bridge.retired_portals.get(room_id)
            if retired is not None and retired.user_mxid == user.mxid:
                await self.bridge.send_status(room_id, event_id, delivered=False, reason=(
                    f"{retired.remote_name} is logged out of this bridge. Send `login` in your chat "
                    f"with me to log in again, or `{COMMAND_PREFIX} delete-portal` to leave this room."))
            return
        # Through the portal's queue: ordered against the remote events of the same room.
        await portal.enqueue(lambda: self._portal_message(portal, user.mxid, event))

    async def _secret_lost(self, user: User, room_id: str, event_id: str) -> None:
        """A message that may hold a secret was stored scrubbed, and its text did not survive a
        restart of the bridge (it is never stored): remove it from the room, ask again."""
        log.info("A scrubbed message of %s in %s arrived after a restart; asking again",
                 user.mxid, room_id)
        await self.commands.redact_secret(room_id, event_id)
        await self.bridge.bot.send_notice(
            RoomID(room_id),
            "The bridge restarted before it could use your message, which may have held a "
            "password; it was not kept. Please start again with `login`.",
        )

    async def _owner_only(self, portal: Portal, sender: str, room_id: str, event_id: str) -> bool:
        if sender == portal.login.row.user_mxid:
            return True
        await self.bridge.send_status(RoomID(room_id), event_id, delivered=False, reason=(
            f"only {portal.login.row.user_mxid} can send through {portal.login.row.remote_name}."))
        return False

    async def _portal_message(self, portal: Portal, sender: str, event: dict[str, Any]) -> None:
        room_id, event_id = event["room_id"], event["event_id"]
        if not await self._owner_only(portal, sender, room_id, event_id):
            return
        content = dict(event.get("content", {}))
        client = portal.login.client
        relates = content.get("m.relates_to") or {}
        if client is None or portal.login.state == LoginState.LOGGED_OUT:
            reason = f"{portal.login.row.remote_name} is not connected"
            reason += f" ({portal.login.state_reason})." if portal.login.state_reason else "."
            await self.bridge.send_status(RoomID(room_id), event_id, delivered=False, reason=(
                reason + " See `list-logins`; send `login` to me again if the password changed."))
            return
        if relates.get("rel_type") == "m.replace":
            target = await self.bridge.messages.by_mxid(relates.get("event_id", ""))
            if not isinstance(client, EditHandler) or target is None:
                await self.bridge.send_status(RoomID(room_id), event_id, delivered=False,
                                              reason="this message cannot be edited here.")
                return
            new_content = content.get("m.new_content") or content
            await self._send(room_id, event_id, client.handle_matrix_edit(MatrixEdit(
                portal.ref(), event_id, sender, MessageID(target.id), new_content)))
            return
        thread_root = thread_latest = reply_to = None
        if relates.get("rel_type") == "m.thread":
            row = await self.bridge.messages.by_mxid(relates.get("event_id", ""))
            if row is not None:
                thread_root = MessageID(row.id)
                thread_latest = await self._thread_latest(portal, room_id, relates, event_id) or thread_root
        reply_evt = (relates.get("m.in_reply_to") or {}).get("event_id")
        if reply_evt and not relates.get("is_falling_back"):
            row = await self.bridge.messages.by_mxid(reply_evt)
            reply_to = MessageID(row.id) if row else None
        mention_names = await self._mention_names(room_id, content)
        msg = MatrixMessage(
            portal=portal.ref(), event_id=event_id, sender=sender, content=content,
            timestamp_ms=int(event.get("origin_server_ts", 0)), thread_root=thread_root,
            thread_latest=thread_latest, reply_to=reply_to, mention_names=mention_names,
        )
        remote_id = await self._send(room_id, event_id, client.handle_matrix_message(msg))
        if remote_id:
            root_row = await self.bridge.messages.first_part(portal.login.id, thread_root) if thread_root else None
            await self.bridge.messages.insert(MessageRow(
                receiver=portal.login.id, portal_id=portal.row.id, id=remote_id, part_id="",
                mxid=event_id, room_id=room_id, sender_id="", timestamp=msg.timestamp_ms,
                thread_root=(root_row.thread_root or root_row.id) if root_row else None,
            ))

    async def _thread_latest(self, portal: Portal, room_id: str, relates: dict[str, Any],
                             event_id: str) -> MessageID | None:
        """The thread's newest bridged message before `event_id`, in the room's order."""
        try:
            row = await latest_before(self.bridge.bot, self.bridge.messages, portal.login.id,
                                      room_id, relates["event_id"], event_id)
        except ThreadOrderUnavailable as e:
            # The client's fallback reply names the event it showed last in the thread.
            log.warning("Thread order unavailable, following the client's fallback reply: %s", e.reason)
            fallback = (relates.get("m.in_reply_to") or {}).get("event_id")
            row = await self.bridge.messages.by_mxid(fallback) if fallback else None
        return MessageID(row.id) if row and row.receiver == portal.login.id else None

    async def _mention_names(self, room_id: str, content: dict[str, Any]) -> dict[str, str]:
        names: dict[str, str] = {}
        for mxid in (content.get("m.mentions") or {}).get("user_ids", []) or []:
            network_id = self.bridge.ghosts.network_id(mxid)
            try:
                info = await self.bridge.bot.get_room_member_info(RoomID(room_id), mxid)
                names[mxid] = (info.displayname if info and info.displayname else None) or network_id or mxid
            except MatrixError as e:  # not a member, or the homeserver did not say: the ID will do
                log.debug("No display name for mentioned %s in %s: %s", mxid, room_id, e)
                names[mxid] = network_id or mxid
        return names

    async def _call(self, room_id: str, event_id: str, coro: Any) -> Any:
        try:
            return await coro
        except ConnectorError as e:
            log.info("Action %s in %s failed: %s", event_id, room_id, e.reason)
            await self._unsupported(room_id, event_id, e.reason)
        return None

    async def _send(self, room_id: str, event_id: str, coro: Any) -> Any:
        """Hand a message to the network; a refusal becomes a failed send status and a notice."""
        try:
            return await coro
        except ConnectorError as e:
            log.info("Message %s in %s not sent: %s", event_id, room_id, e.reason)
            await self.bridge.send_status(RoomID(room_id), event_id, delivered=False, reason=e.reason)
        return None

    async def _unsupported(self, room_id: str, event_id: str, text: str) -> None:
        await send_event(self.bridge.bot, room_id, EventType.ROOM_MESSAGE, {
            "msgtype": "m.notice", "body": text, "m.mentions": {},
            "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
        })

    async def _reaction(self, event: dict[str, Any]) -> None:
        portal = await self.bridge.portal_by_room(event["room_id"])
        if portal is None or event["sender"] != portal.login.row.user_mxid:
            return
        await portal.enqueue(lambda: self._portal_reaction(portal, event))

    async def _portal_reaction(self, portal: Portal, event: dict[str, Any]) -> None:
        relates = event.get("content", {}).get("m.relates_to", {})
        target = await self.bridge.messages.by_mxid(relates.get("event_id", ""))
        client = portal.login.capability(ReactionHandler)
        if client is None or target is None:
            await self._unsupported(event["room_id"], event["event_id"], "Reactions are not bridged here.")
            return
        await self._call(event["room_id"], event["event_id"], client.handle_matrix_reaction(
            MatrixReaction(portal.ref(), event["event_id"], event["sender"], MessageID(target.id),
                           str(relates.get("key", "")))))

    async def _redaction(self, event: dict[str, Any]) -> None:
        portal = await self.bridge.portal_by_room(event["room_id"])
        if portal is None or event["sender"] != portal.login.row.user_mxid:
            return
        await portal.enqueue(lambda: self._portal_redaction(portal, event))

    async def _portal_redaction(self, portal: Portal, event: dict[str, Any]) -> None:
        redacts = event.get("redacts") or event.get("content", {}).get("redacts", "")
        target = await self.bridge.messages.by_mxid(redacts)
        if target is None:
            return
        client = portal.login.capability(RedactionHandler)
        if client is None:
            await self._unsupported(event["room_id"], redacts, "Deleting messages is not supported here.")
            return
        await self._call(event["room_id"], redacts, client.handle_matrix_redaction(
            MatrixRedaction(portal.ref(), event["event_id"], event["sender"], MessageID(target.id))))

    async def _receipts(self, edu: dict[str, Any]) -> None:
        room_id = edu.get("room_id")
        if not room_id:
            return
        portal = await self.bridge.portal_by_room(room_id)
        reader = portal.login.capability(ReadReceiptHandler) if portal else None
        if portal is None or reader is None:
            return
        await portal.enqueue(lambda: self._portal_receipts(portal, reader, room_id, edu))

    async def _portal_receipts(self, portal: Portal, reader: ReadReceiptHandler, room_id: str,
                               edu: dict[str, Any]) -> None:
        owner = portal.login.row.user_mxid
        for event_id, receipts in (edu.get("content") or {}).items():
            readers = (receipts or {}).get("m.read", {}) or {}
            if owner not in readers:
                continue
            target = await self.bridge.messages.by_mxid(event_id)
            if target is None or target.sender_id == "":
                continue
            await self._call(room_id, event_id, reader.handle_matrix_read_receipt(
                MatrixReadReceipt(portal.ref(), owner, MessageID(target.id))))
