"""Taking a bridged room apart: everyone leaves (the user is removed), the bot last."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mautrix.types import EventType, RoomID, UserID

if TYPE_CHECKING:
    from .bridge import Bridge
    from .portal import Portal
    from .user_login import UserLogin

log = logging.getLogger("letterbox.cleanup")


async def empty_room(bridge: Bridge, room_id: str, reason: str) -> bool:
    """Ghosts leave, people are removed, then the bot leaves. False if someone could not be
    removed (the room then stays with them; the log says why)."""
    room = RoomID(room_id)
    complete = True
    try:
        members = await bridge.bot.get_joined_members(room)
    except Exception:
        log.warning("Could not list the members of %s", room_id, exc_info=True)
        members = {}
    for mxid in members:
        if mxid == bridge.bot_mxid:
            continue
        try:
            if bridge.ghosts.network_id(mxid) is not None:
                await bridge.ghost_intent(mxid).leave_room(room, reason=reason)
            else:
                await bridge.bot.kick_user(room, UserID(mxid), reason=reason)
        except Exception:
            complete = False
            log.warning("Could not remove %s from %s", mxid, room_id, exc_info=True)
    try:
        await bridge.bot.leave_room(room, reason=reason)
    except Exception:
        log.warning("The bot could not leave %s", room_id, exc_info=True)
    return complete


async def delete_portal(bridge: Bridge, portal: Portal, reason: str) -> bool:
    """Forget a portal and empty its room; the next message of the chat opens a new room."""
    room_id = portal.room_id
    login = portal.login
    await bridge.forget_portal(portal)
    if not room_id:
        return True
    if login.row.space_room:
        try:
            await bridge.bot.send_state_event(RoomID(login.row.space_room), EventType.SPACE_CHILD,
                                              {}, state_key=room_id)
        except Exception:
            log.warning("Could not take %s out of the space", room_id, exc_info=True)
    return await empty_room(bridge, room_id, reason)


async def delete_login_rooms(bridge: Bridge, login: UserLogin, reason: str) -> int:
    """Every room of a login and its space; returns how many rooms were emptied."""
    count = 0
    for row in await bridge.portals_table.for_receiver(login.id):
        portal = await bridge.get_portal(row.id, login)
        if portal.room_id:
            count += 1
        await delete_portal(bridge, portal, reason)
    if login.row.space_room:
        await empty_room(bridge, login.row.space_room, reason)
        login.row.space_room = None
        await bridge.logins_table.update(login.row)
    return count
