"""A failing Matrix event holds its room: later events wait, the homeserver's or database's
outages never count against it, and a message given up tells its sender (real Synapse)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bridge.core.bridge import Bridge
from bridge.network import MatrixMessage, MessageID, RemoteEvent
from devstack.bot_flows import management_room
from devstack.matrix_client import MatrixTestClient
from tests.helpers.loopback_connector import LoopbackClient
from tests.test_core_e2e import log_in

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


async def portal_room(bridge: Bridge, user: MatrixTestClient, name: str) -> tuple[LoopbackClient, str]:
    client = await log_in(bridge, user, await management_room(bridge, user), name)
    await client.receive("ivan", "hello")
    room = await user.wait_for_room_invite()
    await user.join(room)
    await user.wait_for_event(room, lambda e: e["content"].get("body") == "hello")
    return client, room


async def next_sent(client: LoopbackClient) -> str:
    """The body of the next message the network received (fails after 20 s without one)."""
    async with asyncio.timeout(20):
        msg = await client.sent.get()
    return str(msg.content["body"])


def failing_first(client: LoopbackClient, body: str, error: Exception, times: int
                  ) -> Callable[[MatrixMessage], Awaitable[MessageID | None]]:
    real = client.handle_matrix_message
    left = times

    async def handle(msg: MatrixMessage) -> MessageID | None:
        nonlocal left
        if msg.content.get("body") == body and left:
            left -= 1
            raise error
        return await real(msg)

    return handle


async def test_failing_event_holds_its_room_until_it_succeeds(
    bridge: Bridge, matrix_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge.processor.retry_delay = 0.05
    user = await matrix_user()
    client, room = await portal_room(bridge, user, "order1")
    monkeypatch.setattr(client, "handle_matrix_message",
                        failing_first(client, "first", RuntimeError("glitch"), bridge.processor.max_attempts - 1))
    await user.send_text(room, "first")
    await user.send_text(room, "second")
    got = [await next_sent(client) for _ in range(2)]
    assert got == ["first", "second"]


async def test_outage_is_waited_out_without_counting_against_the_event(
    bridge: Bridge, matrix_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge.processor.retry_delay = 0.05
    bridge.processor.max_retry_delay = 0.1
    user = await matrix_user()
    client, room = await portal_room(bridge, user, "order2")
    outage = ConnectionRefusedError("database unreachable")
    monkeypatch.setattr(client, "handle_matrix_message",
                        failing_first(client, "during outage", outage, bridge.processor.max_attempts * 3))
    await user.send_text(room, "during outage")
    await user.send_text(room, "after it")
    got = [await next_sent(client) for _ in range(2)]
    assert got == ["during outage", "after it"]


async def test_event_given_up_tells_the_sender_and_the_room_moves_on(
    bridge: Bridge, matrix_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge.processor.retry_delay = 0.05
    user = await matrix_user()
    client, room = await portal_room(bridge, user, "order3")
    monkeypatch.setattr(client, "handle_matrix_message",
                        failing_first(client, "poison", ValueError("bug"), 1000))
    poison = await user.send_text(room, "poison")
    await user.send_text(room, "next one")
    assert await next_sent(client) == "next one"
    notice = await user.wait_for_event(room, lambda e: e["content"].get("msgtype") == "m.notice"
                                       and e["content"].get("body", "").startswith("Not delivered"))
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == poison
    assert "ValueError" in notice["content"]["body"]


async def test_matrix_and_remote_events_of_a_room_share_its_queue(
    bridge: Bridge, matrix_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Matrix message sent while a remote event of the same room is being applied waits for it."""
    user = await matrix_user()
    client, room = await portal_room(bridge, user, "order4")
    portal = await bridge.portal_by_room(room)
    assert portal is not None
    gate = asyncio.Event()
    started = asyncio.Event()
    real_remote = portal.handle_remote

    async def slow_remote(event: RemoteEvent) -> None:
        started.set()
        await gate.wait()
        await real_remote(event)

    monkeypatch.setattr(portal, "handle_remote", slow_remote)
    remote = asyncio.create_task(client.receive("ivan", "remote first"))
    await asyncio.wait_for(started.wait(), 10)
    await user.send_text(room, "matrix second")
    await user.wait_for(lambda: portal.queued >= 1, timeout=15)  # waits behind the remote event
    assert client.sent.empty()  # the network has not got it while the remote event is applied
    gate.set()
    await remote
    assert await next_sent(client) == "matrix second"
