"""Commands about a login's mail and rooms: sync, backfill, delete-portal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..network import BackfillHandler, SyncHandler
from .room_cleanup import delete_portal, empty_room

if TYPE_CHECKING:
    from .commands import CommandEvent, CommandProcessor

MAX_BACKFILL = 500


class ChatCommands:
    def __init__(self, processor: CommandProcessor) -> None:
        self.processor = processor
        self.bridge = processor.bridge

    async def cmd_sync(self, evt: CommandEvent) -> None:
        login, _ = await self.processor.chosen_login(evt)
        if login is None:
            return
        syncer = login.capability(SyncHandler)
        if syncer is None:
            await self.processor.reply(evt.room_id, f"{login.row.remote_name} cannot be checked now "
                                       "(not connected, or the network does not support it).")
            return
        await syncer.sync_now()
        await self.processor.reply(evt.room_id, f"Checking {login.row.remote_name} for new "
                                   "messages now; they appear in their rooms.")

    async def cmd_backfill(self, evt: CommandEvent) -> None:
        login, args = await self.processor.chosen_login(evt)
        if login is None:
            return
        try:
            count = int(args[0]) if args else 20
        except ValueError:
            count = 0
        if not 0 < count <= MAX_BACKFILL:
            await self.processor.reply(evt.room_id, "Usage: `backfill [n] [--login <login>]`, "
                                       f"n between 1 and {MAX_BACKFILL} (default 20).")
            return
        filler = login.capability(BackfillHandler)
        if filler is None:
            await self.processor.reply(evt.room_id, f"{login.row.remote_name} cannot fetch older "
                                       "messages (not connected, or the network does not support it).")
            return
        portal = evt.portal if evt.portal is not None and evt.portal.login is login else None
        where = "of this room" if portal else f"of {login.row.remote_name}"
        await self.processor.reply(evt.room_id, f"Looking for up to {count} older messages {where}…")
        found = await filler.backfill(portal.ref() if portal else None, count)
        text = (f"Brought in {found} older message{'s' if found != 1 else ''} {where}."
                if found else f"No older messages {where} that are not already here.")
        await self.processor.reply(evt.room_id, text)

    async def cmd_delete_portal(self, evt: CommandEvent) -> None:
        reason = "Deleted with delete-portal"
        portal = evt.portal
        if portal is not None:
            if portal.login.row.user_mxid != evt.user.mxid:
                await self.processor.reply(evt.room_id, "Only the owner of this chat can delete it.")
                return
            await self.processor.reply(evt.room_id, "Deleting this room: everyone leaves, and new "
                                       "messages of this chat will open a new room.")
            if not await delete_portal(self.bridge, portal, reason):
                await self.processor.reply(evt.room_id, "Some members could not be removed; "
                                           "leave the room yourself.")
            return
        retired = await self.bridge.retired_portals.get(evt.room_id)
        if retired is not None and retired.user_mxid == evt.user.mxid:
            await self.bridge.retired_portals.remove(evt.room_id)
            await empty_room(self.bridge, evt.room_id, reason)
            return
        await self.processor.reply(evt.room_id, "This is not a bridged chat: send "
                                   "`!lb delete-portal` in the room you want to delete.")
