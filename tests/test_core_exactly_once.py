"""Remote messages reach Matrix exactly once per part, whatever instruction a crash interrupts.

A crash at one exact instruction is no fault a real server can produce, so it is played by
raising from the step after which the process would die; everything else (Synapse, the
database) is real. Each scenario then re-delivers the same remote message, as a connector does
after a restart, and counts the events in the room.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
import uuid

import pytest

from bridge.core.bridge import Bridge
from bridge.core.part_sender import part_txn_id
import bridge.core.portal as portal_module
from bridge.core.sending import TXN_KEY
from bridge.db import MessageRow, PendingPart
from bridge.network import (
    ChatInfo,
    ChatMember,
    MessageID,
    NetworkUserID,
    PortalID,
    RemoteMessage,
    UserInfo,
)
from bridge.network.events import ConvertedPart
from devstack.bot_flows import management_room
from devstack.matrix_client import MatrixTestClient
from devstack.stack import Synapse
from tests.helpers.harness import BridgeSetup, start_bridge
from tests.helpers.loopback_connector import LoopbackClient
from tests.test_core_e2e import log_in

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


class SimulatedCrash(Exception):
    """The process dies here."""


def two_part_message(sender: str, token: str) -> RemoteMessage:
    return RemoteMessage(
        portal=PortalID(f"dm:{sender}"),
        sender=NetworkUserID(sender),
        sender_info=UserInfo(name=sender.title()),
        timestamp=datetime.now(UTC),
        chat_info=ChatInfo(members=[ChatMember(NetworkUserID(sender), UserInfo(name=sender.title()))],
                           is_direct=True),
        message_id=MessageID(f"msg-{token}"),
        parts=[
            ConvertedPart("m.room.message", {"msgtype": "m.text", "body": f"text {token}", "m.mentions": {}}),
            ConvertedPart("m.room.message", {"msgtype": "m.notice", "body": f"file {token}", "m.mentions": {}}),
        ],
    )


async def portal_with_user(bridge: Bridge, user: MatrixTestClient, client: LoopbackClient,
                           sender: str) -> str:
    """Create the DM portal with a first message and join it; returns the room ID."""
    await client.receive(sender, "opening")
    room = await user.wait_for_room_invite()
    await user.join(room)
    await user.wait_for_event(room, lambda e: e["content"].get("body") == "opening")
    return room


async def bodies_after_sentinel(bridge: Bridge, user: MatrixTestClient, client: LoopbackClient,
                                room: str, sender: str) -> list[str]:
    """Every message body in the room, read once a later message has arrived."""
    sentinel = f"sentinel {uuid.uuid4().hex}"
    await client.receive(sender, sentinel)
    await user.wait_for_event(room, lambda e: e["content"].get("body") == sentinel)
    page = await user.request("GET", f"/rooms/{room}/messages", dir="b", limit=100)
    return [e["content"].get("body", "") for e in page["chunk"] if e["type"] == "m.room.message"]


async def assert_recorded_once(bridge: Bridge, login_id: str, message_id: str, parts: int) -> None:
    rows = await bridge.messages.parts(login_id, message_id)
    assert sorted(r.part_id for r in rows) == [str(i) for i in range(parts)]
    assert await bridge.pending_parts.of_message(login_id, message_id) == []
    placed = await bridge.messages.placement(login_id, message_id)
    assert placed is not None and placed[1]


async def test_crash_between_send_and_record_does_not_duplicate(
    bridge: Bridge, matrix_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await matrix_user()
    client = await log_in(bridge, user, await management_room(bridge, user), "crash1")
    room = await portal_with_user(bridge, user, client, "erin")
    token = uuid.uuid4().hex[:8]
    message = two_part_message("erin", token)

    complete = bridge.pending_parts.complete

    async def dies_after_first_send(row: MessageRow) -> None:
        raise SimulatedCrash()

    monkeypatch.setattr(bridge.pending_parts, "complete", dies_after_first_send)
    with pytest.raises(SimulatedCrash):
        await client.remote(message)
    monkeypatch.setattr(bridge.pending_parts, "complete", complete)
    await client.remote(two_part_message("erin", token))  # redelivered after the "restart"

    bodies = await bodies_after_sentinel(bridge, user, client, room, "erin")
    assert bodies.count(f"text {token}") == 1 and bodies.count(f"file {token}") == 1
    await assert_recorded_once(bridge, client.login.login_id, message.message_id, 2)


async def test_crash_before_second_part_sends_it_on_redelivery(
    bridge: Bridge, matrix_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await matrix_user()
    client = await log_in(bridge, user, await management_room(bridge, user), "crash2")
    room = await portal_with_user(bridge, user, client, "fred")
    token = uuid.uuid4().hex[:8]
    message = two_part_message("fred", token)

    real_send = portal_module.send_part
    calls = 0

    async def dies_before_second_send(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise SimulatedCrash()
        return await real_send(*args, **kwargs)

    monkeypatch.setattr(portal_module, "send_part", dies_before_second_send)
    with pytest.raises(SimulatedCrash):
        await client.remote(message)
    monkeypatch.setattr(portal_module, "send_part", real_send)
    # One part stored, one pending: the mail does not count as bridged.
    assert await bridge.messages.placement(client.login.login_id, message.message_id) == ("dm:fred", False)
    await client.remote(two_part_message("fred", token))

    bodies = await bodies_after_sentinel(bridge, user, client, room, "fred")
    assert bodies.count(f"text {token}") == 1 and bodies.count(f"file {token}") == 1
    await assert_recorded_once(bridge, client.login.login_id, message.message_id, 2)


async def test_pending_part_is_found_in_the_room_when_the_homeserver_forgot_the_transaction(
    bridge: Bridge, matrix_user: MakeUser
) -> None:
    """Synapse keeps appservice transaction IDs in memory only: after its restart the bridge's
    own record and the marker in the room are what prevent the duplicate."""
    user = await matrix_user()
    client = await log_in(bridge, user, await management_room(bridge, user), "crash3")
    room = await portal_with_user(bridge, user, client, "gina")
    token = uuid.uuid4().hex[:8]
    message = two_part_message("gina", token)
    login_id = client.login.login_id
    portal = await bridge.get_portal("dm:gina", bridge.logins[login_id])
    txn = part_txn_id(bridge.txn_key, login_id, message.message_id, "0")
    await bridge.pending_parts.begin([
        PendingPart(receiver=login_id, id=message.message_id, part_id=p, portal_id=portal.row.id,
                    room_id=room, txn_id=part_txn_id(bridge.txn_key, login_id, message.message_id, p))
        for p in ("0", "1")
    ])
    # The part reached the room before the crash, under a transaction ID Synapse no longer knows.
    intent = await bridge.ghosts.intent_for(NetworkUserID("gina"))
    earlier = await intent.send_message_event(
        room, portal_module.EventType.ROOM_MESSAGE,
        {"msgtype": "m.text", "body": f"text {token}", "m.mentions": {}, TXN_KEY: txn},
        txn_id=f"other-{token}",
    )
    raw = await user.request("GET", f"/rooms/{room}/event/{earlier}")
    assert raw["content"][TXN_KEY] == txn  # readable by the lookup, encrypted room or not
    await client.remote(message)

    bodies = await bodies_after_sentinel(bridge, user, client, room, "gina")
    assert bodies.count(f"text {token}") == 1 and bodies.count(f"file {token}") == 1
    await assert_recorded_once(bridge, login_id, message.message_id, 2)
    first = await bridge.messages.first_part(login_id, message.message_id)
    assert first is not None and first.mxid == earlier


@pytest.fixture
async def encrypting_bridge(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str,
                            tmp_path: Path) -> AsyncIterator[Bridge]:
    """A loopback bridge that creates its portals encrypted."""
    config = bridge_setups["loopback"].config_for(tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
                                                  core={"encryption.default": True})
    bridge = await start_bridge(config)
    yield bridge
    await bridge.stop()


async def test_pending_part_is_found_in_an_encrypted_room(
    encrypting_bridge: Bridge, matrix_user: MakeUser
) -> None:
    bridge = encrypting_bridge
    user = await matrix_user()
    client = await log_in(bridge, user, await management_room(bridge, user), "crash4")
    await client.receive("hana", "opening")
    room = await user.wait_for_room_invite()
    await user.join(room)
    token = uuid.uuid4().hex[:8]
    message = two_part_message("hana", token)
    login_id = client.login.login_id
    portal = await bridge.get_portal("dm:hana", bridge.logins[login_id])
    txns = [part_txn_id(bridge.txn_key, login_id, message.message_id, p) for p in ("0", "1")]
    await bridge.pending_parts.begin([
        PendingPart(receiver=login_id, id=message.message_id, part_id=str(i), portal_id=portal.row.id,
                    room_id=room, txn_id=txn) for i, txn in enumerate(txns)
    ])
    intent = await bridge.ghosts.intent_for(NetworkUserID("hana"))
    earlier = await intent.send_message_event(
        room, portal_module.EventType.ROOM_MESSAGE,
        {"msgtype": "m.text", "body": f"text {token}", "m.mentions": {}, TXN_KEY: txns[0]},
        txn_id=f"other-{token}",
    )
    await client.remote(message)

    page = await user.request("GET", f"/rooms/{room}/messages", dir="b", limit=100)
    marked = [(e["type"], e["content"][TXN_KEY]) for e in page["chunk"] if e["content"].get(TXN_KEY) in txns]
    assert sorted(marked) == sorted(("m.room.encrypted", txn) for txn in txns)
    first = await bridge.messages.first_part(login_id, message.message_id)
    assert first is not None and first.mxid == earlier


async def test_the_core_keeps_a_posted_message_where_it_is(bridge: Bridge, matrix_user: MakeUser) -> None:
    """The connector proposes a portal; for a message posted before, the core answers with the
    portal that holds it and posts nothing."""
    user = await matrix_user()
    client = await log_in(bridge, user, await management_room(bridge, user), "placed")
    room = await portal_with_user(bridge, user, client, "jon")
    token = uuid.uuid4().hex[:8]
    login_id = client.login.login_id
    assert await bridge.queue_remote_event(login_id, two_part_message("jon", token)) == "dm:jon"
    moved = two_part_message("jon", token)
    moved.portal = PortalID("group:elsewhere")
    assert await bridge.queue_remote_event(login_id, moved) == "dm:jon"
    assert await bridge.portals_table.get("group:elsewhere", login_id) is None
    bodies = await bodies_after_sentinel(bridge, user, client, room, "jon")
    assert bodies.count(f"text {token}") == 1


async def test_crash_after_the_room_is_created_does_not_create_a_second_room(
    bridge: Bridge, matrix_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await matrix_user()
    client = await log_in(bridge, user, await management_room(bridge, user), "rooms1")
    real = bridge.room_created

    def dies_before_recording(room_id: Any, initial_state: Any) -> None:
        raise SimulatedCrash()

    monkeypatch.setattr(bridge, "room_created", dies_before_recording)
    suffix = uuid.uuid4().hex[:6]  # a ghost of its own: ghosts outlive a test's database
    with pytest.raises(SimulatedCrash):
        await client.receive(f"kim{suffix}", "first words")
    monkeypatch.setattr(bridge, "room_created", real)
    await client.receive(f"kim{suffix}", "second words")

    room = await user.wait_for_room_invite()
    await user.join(room)
    await user.wait_for_event(room, lambda e: e["content"].get("body") == "second words")
    portal = await bridge.portal_by_room(room)
    assert portal is not None and portal.row.id == f"dm:kim{suffix}"
    assert "creating_room" not in portal.row.metadata
    ghost = await bridge.ghosts.intent_for(NetworkUserID(f"kim{suffix}"))
    assert await ghost.get_joined_rooms() == [room]
