"""Commands and refusals through a real Synapse: a command never leaks, a message never vanishes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import time
from typing import Any
from urllib.parse import quote

import pytest

from bridge.core.bridge import Bridge
from devstack.bot_flows import management_room, notices, wait_notice
from devstack.matrix_client import Event, MatrixTestClient
from tests.helpers.loopback_connector import PASSWORD
from tests.test_core_e2e import log_in

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
SEND_STATUS = "com.beeper.message_send_status"


async def portal_with(bridge: Bridge, user: MatrixTestClient, room: str, login: str,
                      correspondent: str) -> str:
    """Log in and receive a first message from `correspondent`; returns the joined portal room."""
    client = await log_in(bridge, user, room, login)
    await client.receive(correspondent, f"hello from {correspondent}")
    portal = await user.wait_for_room_invite()
    await user.join(portal)
    await user.wait_for_event(portal, lambda e: e["content"].get("body") == f"hello from {correspondent}")
    return portal


def status_of(user: MatrixTestClient, room: str, event_id: str) -> Callable[[], Event | None]:
    def find() -> Event | None:
        for e in user.timeline.get(room, []):
            relates = e.get("content", {}).get("m.relates_to", {})
            if e.get("type") == SEND_STATUS and relates.get("event_id") == event_id:
                return e
        return None
    return find


def reply_notice(user: MatrixTestClient, room: str, bot: str, event_id: str) -> Callable[[], str | None]:
    def find() -> str | None:
        for e in user.messages(room, bot):
            content: dict[str, Any] = e["content"]
            if (content.get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id") == event_id:
                return str(content.get("body"))
        return None
    return find


async def sent_bodies(bridge: Bridge, event_id: str) -> list[str]:
    rows = await bridge.connector_db.fetch("SELECT body FROM loopback_sent WHERE event_id=$1", event_id)
    return [r["body"] for r in rows]


async def test_prefixed_command_in_a_portal_is_answered_and_never_sent(
    bridge: Bridge, matrix_user: MakeUser
) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    portal = await portal_with(bridge, user, room, "leaky", "erin")
    command = await user.send_text(portal, "!lb list-logins")
    await wait_notice(user, portal, bridge.bot_mxid, "• leaky: connected")
    assert await sent_bodies(bridge, command) == []
    # The next ordinary message still goes out: the command did not break the room.
    normal = await user.send_text(portal, "a normal message")
    sent = await bridge.connector.clients["leaky"].sent.get()  # type: ignore[attr-defined]
    assert sent.event_id == normal


async def test_commands_work_in_every_private_chat_with_the_bot(
    bridge: Bridge, matrix_user: MakeUser
) -> None:
    user = await matrix_user()
    first = await management_room(bridge, user)
    second = await management_room(bridge, user)
    await user.send_text(first, "ping")
    await wait_notice(user, first, bridge.bot_mxid, "Pong")
    await user.send_text(second, "version")
    await wait_notice(user, second, bridge.bot_mxid, "Letterbox")


async def test_message_after_logout_gets_a_failed_status_and_a_notice(
    bridge: Bridge, matrix_user: MakeUser
) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    portal = await portal_with(bridge, user, room, "gone", "fred")
    await user.send_text(room, "logout gone --keep-rooms")
    await wait_notice(user, room, bridge.bot_mxid, "Logged out of gone")
    lost = await user.send_text(portal, "are you still there?")
    status = await user.wait_for(status_of(user, portal, lost))
    assert status["sender"] == bridge.bot_mxid
    assert status["content"]["status"] == "FAIL_PERMANENT"
    notice = await user.wait_for(reply_notice(user, portal, bridge.bot_mxid, lost))
    assert "gone is logged out" in notice and "login" in notice, notice
    assert await sent_bodies(bridge, lost) == []


async def test_message_from_someone_without_the_account_gets_a_failed_status(
    bridge: Bridge, matrix_user: MakeUser
) -> None:
    user = await matrix_user()
    guest = await matrix_user("guest")
    room = await management_room(bridge, user)
    portal = await portal_with(bridge, user, room, "owned", "gina")
    await user.request("POST", f"/rooms/{portal}/invite", {"user_id": guest.user_id})
    await guest.join(portal)
    foreign = await guest.send_text(portal, "let me write too")
    status = await guest.wait_for(status_of(guest, portal, foreign))
    assert status["content"]["status"] == "FAIL_PERMANENT"
    notice = await guest.wait_for(reply_notice(guest, portal, bridge.bot_mxid, foreign))
    assert f"only {user.user_id} can send" in notice, notice
    assert await sent_bodies(bridge, foreign) == []


async def test_login_moves_to_a_room_where_the_bot_can_remove_the_password(
    bridge: Bridge, matrix_user: MakeUser
) -> None:
    user = await matrix_user()
    # A plain private room: the user created it, the bot has no power to remove messages.
    created = await user.request("POST", "/createRoom", {
        "is_direct": True, "invite": [bridge.bot_mxid], "preset": "private_chat"})
    room = created["room_id"]
    await wait_notice(user, room, bridge.bot_mxid, "Send `help`")
    await user.send_text(room, "login")
    await wait_notice(user, room, bridge.bot_mxid, "Username")
    await user.send_text(room, "mover")
    moved = (await wait_notice(user, room, bridge.bot_mxid, "cannot remove messages"))[-1]
    new_room = await user.wait_for_room_invite()
    assert f"https://matrix.to/#/{quote(new_room, safe='')}" in moved, moved
    await user.join(new_room)
    await wait_notice(user, new_room, bridge.bot_mxid, "Password")
    secret = await user.send_text(new_room, PASSWORD)
    await wait_notice(user, new_room, bridge.bot_mxid, "Logged in to loopback as mover")
    assert (await user.request("GET", f"/rooms/{new_room}/event/{secret}"))["content"] == {}
    assert not any("Password" in n for n in notices(user, room, bridge.bot_mxid))


async def test_login_with_an_unknown_option_is_refused_with_the_valid_ones(
    bridge: Bridge, matrix_user: MakeUser
) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    await user.send_text(room, "login usrname=typo")
    refused = (await wait_notice(user, room, bridge.bot_mxid, "Unknown option"))[-1]
    assert "`usrname`" in refused and "`username=…`" in refused and "`password=…`" in refused
    # No login started: the next message is a command again, not an answer.
    await user.send_text(room, "ping")
    await wait_notice(user, room, bridge.bot_mxid, "Pong")


async def test_direct_chat_is_named_after_the_correspondent_never_an_internal_id(
    bridge: Bridge, matrix_user: MakeUser
) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    portal = await portal_with(bridge, user, room, "namer", "hank")
    state = {(e["type"], e.get("state_key")): e["content"] for e in await user.room_state(portal)}
    assert state[("m.room.name", "")]["name"] == "Hank"
    (channel,) = [c["channel"] for (t, _), c in state.items() if t == "m.bridge"]
    assert channel["displayname"] == "Hank" and channel["id"] == "dm:hank"


async def test_help_is_grouped_with_arguments_in_html_and_plain_text(
    bridge: Bridge, matrix_user: MakeUser
) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    await user.send_text(room, "help")
    await wait_notice(user, room, bridge.bot_mxid, "Your accounts:")
    (event,) = [e for e in user.messages(room, bridge.bot_mxid) if "Your accounts:" in e["content"]["body"]]
    content = event["content"]
    assert "• start-chat <identifier> [--login <login>] — " in content["body"]
    assert content["format"] == "org.matrix.custom.html"
    html = content["formatted_body"]
    assert "<h4>Your accounts</h4>" in html and "<h4>Chats</h4>" in html
    assert "<code>start-chat &lt;identifier&gt; [--login &lt;login&gt;]</code>" in html


async def test_start_chat_answers_with_a_link_to_the_room(bridge: Bridge, matrix_user: MakeUser) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    await log_in(bridge, user, room, "linker")
    await user.send_text(room, "start-chat ivy")
    answer = (await wait_notice(user, room, bridge.bot_mxid, "Created a chat with ivy"))[-1]
    invited = await user.wait_for_room_invite()
    assert answer.endswith(f"https://matrix.to/#/{quote(invited, safe='')}"), answer


async def wait_removed(user: MatrixTestClient, *rooms: str, timeout: float = 15.0) -> None:
    """Until the homeserver no longer counts the user in any of `rooms` (a removed user's own
    sync does not carry the room's timeline any more)."""
    deadline = time.monotonic() + timeout
    while True:
        joined = set((await user.request("GET", "/joined_rooms"))["joined_rooms"])
        if not joined & set(rooms):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"still in {joined & set(rooms)}")
        await user.sync_once(timeout_ms=500)


async def test_delete_portal_empties_the_room_and_the_next_message_opens_a_new_one(
    bridge: Bridge, matrix_user: MakeUser
) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    portal = await portal_with(bridge, user, room, "deleter", "jill")
    await user.send_text(portal, "!lb delete-portal")
    await wait_removed(user, portal)
    client = bridge.connector.clients["deleter"]  # type: ignore[attr-defined]
    assert await bridge.portals_table.get("dm:jill", client.login.login_id) is None
    await client.receive("jill", "me again")  # type: ignore[attr-defined]
    fresh = await user.wait_for_room_invite()
    assert fresh != portal


async def test_logout_offers_to_remove_its_rooms_and_space(bridge: Bridge, matrix_user: MakeUser) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    portal = await portal_with(bridge, user, room, "tidy", "kate")
    login_id = bridge.connector.clients["tidy"].login.login_id  # type: ignore[attr-defined]
    space = (await bridge.logins_table.get(login_id)).space_room  # type: ignore[union-attr]
    assert space
    await user.join(space)
    await user.send_text(room, "logout tidy")
    offer = (await wait_notice(user, room, bridge.bot_mxid, "--delete-rooms"))[-1]
    assert "1 room and a space" in offer and "--keep-rooms" in offer
    assert await bridge.logins_table.get(login_id) is not None  # nothing done yet
    await user.send_text(room, "logout tidy --delete-rooms")
    await wait_notice(user, room, bridge.bot_mxid, "Logged out of tidy. Removed its 1 room and its space")
    await wait_removed(user, portal, space)
    assert await bridge.logins_table.get(login_id) is None
