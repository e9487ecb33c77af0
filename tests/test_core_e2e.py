"""The core end to end on a real Synapse, with the loopback connector (both database backends)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from bridge.core.bridge import Bridge
from bridge.network import (
    NetworkUserID,
    PortalID,
    RemoteDelete,
    RemoteEdit,
    RemoteReaction,
    RemoteReadReceipt,
)
from bridge.network.events import ConvertedPart
from devstack.bot_flows import management_room, wait_notice
from devstack.errors import MatrixAdminError
from devstack.matrix_client import MatrixTestClient
from devstack.stack import Synapse
from tests.helpers.loopback_connector import PASSWORD, LoopbackClient

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


async def log_in(bridge: Bridge, user: MatrixTestClient, room: str, name: str = "tester") -> LoopbackClient:
    await user.send_text(room, "login")
    await wait_notice(user, room, bridge.bot_mxid, "Username")
    await user.send_text(room, name)
    await wait_notice(user, room, bridge.bot_mxid, "Password")
    await user.send_text(room, PASSWORD)
    await wait_notice(user, room, bridge.bot_mxid, f"Logged in to loopback as {name}")
    return bridge.connector.clients[name]  # type: ignore[attr-defined]


async def test_remote_message_creates_portal_and_reply_reaches_connector(
    bridge: Bridge, matrix_user: MakeUser
) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    await user.send_text(room, "login")
    await wait_notice(user, room, bridge.bot_mxid, "Username")
    await user.send_text(room, "tester")
    await wait_notice(user, room, bridge.bot_mxid, "Password")
    wrong = await user.send_text(room, "not it")
    await wait_notice(user, room, bridge.bot_mxid, "Login failed: wrong password")
    secret = await user.send_text(room, PASSWORD)
    await wait_notice(user, room, bridge.bot_mxid, "Logged in to loopback as tester")
    for event_id in (wrong, secret):  # typed secrets are redacted at once
        event = await user.request("GET", f"/rooms/{room}/event/{event_id}")
        assert event["content"] == {}, event
    client: LoopbackClient = bridge.connector.clients["tester"]  # type: ignore[attr-defined]
    [stored] = await bridge.logins_table.for_user(user.user_id)
    assert stored.remote_account == "tester" and stored.id != "tester"  # the bridge's own ID
    assert PASSWORD not in str(stored.metadata) and stored.metadata["password"].startswith("v1:")

    await user.send_text(room, "list-logins")
    await wait_notice(user, room, bridge.bot_mxid, "• tester: connected")

    first = await client.receive("bob", "hello from bob")
    portal_room = await user.wait_for_room_invite()
    await user.join(portal_room)
    ghost = bridge.ghosts.mxid("bob")
    msg = await user.wait_for_event(portal_room, lambda e: e.get("sender") == ghost
                                    and e["content"].get("body") == "hello from bob")
    assert msg["content"]["m.mentions"] == {}
    state = {(e["type"], e.get("state_key")): e["content"] for e in await user.room_state(portal_room)}
    assert state[("m.room.join_rules", "")]["join_rule"] == "invite"
    bridge_state = [c for (t, _), c in state.items() if t == "m.bridge"]
    assert bridge_state and bridge_state[0]["protocol"]["id"] == "loopback"
    assert any(t == "m.space.parent" for t, _ in state)
    assert state[("m.room.member", ghost)]["displayname"] == "Bob"
    invite = [e for e in user.invites[portal_room] if e["type"] == "m.room.member" and e["state_key"] == user.user_id]
    assert invite and invite[0]["content"].get("is_direct") is True and invite[0]["sender"] == ghost

    await client.receive("bob", "second, in the thread", thread_root=first)
    threaded = await user.wait_for_event(portal_room, lambda e: e["content"].get("body") == "second, in the thread")
    assert threaded["content"]["m.relates_to"]["rel_type"] == "m.thread"
    assert threaded["content"]["m.relates_to"]["event_id"] == msg["event_id"]

    reply_id = await user.send_text(portal_room, "hi bob, user here")
    sent = await client.sent.get()
    assert sent.event_id == reply_id and sent.content["body"] == "hi bob, user here"
    assert sent.portal.portal_id == "dm:bob"
    rows = await bridge.connector_db.fetch("SELECT body FROM loopback_sent WHERE event_id=$1", reply_id)
    assert [r["body"] for r in rows] == ["hi bob, user here"]
    # the same remote message again is not bridged twice
    await client.receive("bob", "hello from bob")
    assert len([e for e in user.messages(portal_room, ghost) if e["content"]["body"] == "hello from bob"]) == 1


async def test_start_chat_and_commands(bridge: Bridge, matrix_user: MakeUser) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    await user.send_text(room, "ping")
    await wait_notice(user, room, bridge.bot_mxid, "Pong")
    await user.send_text(room, "version")
    await wait_notice(user, room, bridge.bot_mxid, "Letterbox 0.1.0")
    await user.send_text(room, "start-chat carol")
    await wait_notice(user, room, bridge.bot_mxid, "You have no login yet")
    await log_in(bridge, user, room, "starter")
    await user.send_text(room, "start-chat carol")
    await wait_notice(user, room, bridge.bot_mxid, "Created a chat with carol")
    invite = await user.wait_for_room_invite()
    await user.join(invite)
    await user.send_text(room, "frobnicate")
    await wait_notice(user, room, bridge.bot_mxid, "That is not a command I know")
    await user.send_text(room, "logout starter --keep-rooms")
    await wait_notice(user, room, bridge.bot_mxid, "Logged out of starter")
    assert await bridge.logins_table.for_user(user.user_id) == []


async def test_login_refused_outside_management_room_and_invites_checked(
    bridge: Bridge, matrix_user: MakeUser, synapse: Synapse
) -> None:
    user = await matrix_user()
    other = await matrix_user()
    group = await user.request("POST", "/createRoom", {"invite": [other.user_id, bridge.bot_mxid]})
    room = group["room_id"]
    await other.join(room)
    await user.wait_for(lambda: any(e.get("state_key") == bridge.bot_mxid and e["content"].get("membership") == "join"
                                    for e in user.timeline.get(room, [])))
    await user.send_text(room, "!lb login")
    await wait_notice(user, room, bridge.bot_mxid, "only works in a private chat")

    user_id, token = _register_or_login(synapse, "outsider", "outsiderpass")
    outsider = MatrixTestClient(synapse.hs_url, user_id, token)
    try:
        dm = await outsider.create_dm(bridge.bot_mxid)
        await outsider.wait_for(lambda: any(
            e.get("state_key") == bridge.bot_mxid and e["content"].get("membership") == "leave"
            for e in outsider.timeline.get(dm, [])))
    finally:
        await outsider.close()


def _register_or_login(synapse: Synapse, name: str, password: str) -> tuple[str, str]:
    try:
        return synapse.register_user(name, password)
    except MatrixAdminError:  # registered by the other database backend's run
        return synapse.login(name, password)


async def test_remote_edit_reaction_receipt_and_delete(bridge: Bridge, matrix_user: MakeUser) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    client = await log_in(bridge, user, room, "actions")
    first = await client.receive("dora", "original text")
    portal_room = await user.wait_for_room_invite()
    await user.join(portal_room)
    ghost = bridge.ghosts.mxid("dora")
    msg = await user.wait_for_event(portal_room, lambda e: e["content"].get("body") == "original text")
    common = {"portal": PortalID("dm:dora"), "sender": NetworkUserID("dora"), "target": first}

    await client.remote(RemoteEdit(**common, parts=[ConvertedPart(
        "m.room.message", {"msgtype": "m.text", "body": "corrected text", "m.mentions": {}})]))
    edit = await user.wait_for_event(portal_room, lambda e: e["content"].get("m.relates_to", {}).get(
        "rel_type") == "m.replace")
    assert edit["sender"] == ghost and edit["content"]["m.relates_to"]["event_id"] == msg["event_id"]
    assert edit["content"]["m.new_content"]["body"] == "corrected text"

    await client.remote(RemoteReaction(**common, key="👍"))
    reaction = await user.wait_for_event(portal_room, lambda e: e["type"] == "m.reaction")
    assert reaction["sender"] == ghost
    assert reaction["content"]["m.relates_to"] == {"rel_type": "m.annotation", "event_id": msg["event_id"],
                                                   "key": "👍"}

    await client.remote(RemoteReadReceipt(**common))
    await user.wait_for(lambda: any(
        ghost in e["content"].get(msg["event_id"], {}).get("m.read", {})
        for e in user.ephemeral.get(portal_room, []) if e["type"] == "m.receipt"))

    await client.remote(RemoteDelete(**common))
    await user.wait_for_event(portal_room, lambda e: e["type"] == "m.room.redaction"
                              and e.get("redacts", e["content"].get("redacts")) == msg["event_id"])
