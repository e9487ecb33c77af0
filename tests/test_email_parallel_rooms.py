"""Mail of several rooms goes to Matrix at the same time, each room's in mailbox order: real
Postfix, Dovecot and Synapse. Each test lets mail pile up while the bridge is stopped, so the
restarted bridge catches it all up in one pass."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
import re
from urllib.parse import quote

import pytest

from bridge.core.bridge import Bridge
from bridge.core.portal import Portal
from bridge.network import RemoteEvent
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack
from tests.helpers.email_e2e import logged_in, mail, read_folder, wait_in_inbox
from tests.helpers.harness import start_bridge
from tests.test_email_exactly_once import email_client

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
SLOW = "slow@example.org"


class HeldRoom:
    """Holds the room of one correspondent: its mail waits in the room's queue until released."""

    def __init__(self, portal_id: str) -> None:
        self.portal_id = portal_id
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = Portal.handle_remote

        async def held(portal: Portal, event: RemoteEvent) -> None:
            if portal.row.id == self.portal_id:
                self.reached.set()
                await self.release.wait()
            await real(portal, event)

        monkeypatch.setattr(Portal, "handle_remote", held)


@pytest.fixture
def held_room(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldRoom]:
    room = HeldRoom(f"dm:{SLOW}")
    room.install(monkeypatch)
    yield room
    room.release.set()


async def logged_in_and_synced(bridge: Bridge, user: MatrixTestClient, mail_stack: MailStack,
                               mailbox: tuple[str, str]) -> None:
    """Log in; return once the first sync of INBOX (the backfill) is done."""
    await logged_in(bridge, user, mail_stack, mailbox)
    checkpoints = email_client(bridge, user).checkpoints

    async def first_sync_done() -> bool:
        return await checkpoints.get("INBOX") is not None
    await wait_async(first_sync_done, 30, "the first sync of INBOX")


async def logged_in_then_stopped(email_config: Path, user: MatrixTestClient, mail_stack: MailStack,
                                 mailbox: tuple[str, str]) -> None:
    bridge = await start_bridge(email_config, connector_name="email")
    try:
        await logged_in_and_synced(bridge, user, mail_stack, mailbox)
    finally:
        await bridge.stop()


def send(mail_stack: MailStack, me: str, sender: str, text: str) -> None:
    mail_stack.deliver(mail(f"<{sender}>", [me], text, text).as_bytes(), [me], sender)


_SUBJECT = re.compile(r"[\w.]+@example\.org (?:note \d+|first)")


async def bodies(user: MatrixTestClient, room: str) -> list[str]:
    """The subjects (`sender note n`) of the room's messages, oldest first."""
    data = await user.request("GET", f"/rooms/{quote(room)}/messages", dir="f", limit="200")
    found = [_SUBJECT.search(str(e["content"].get("body", ""))) for e in data["chunk"]
             if e.get("type") == "m.room.message"]
    return [m.group(0) for m in found if m]


async def rooms_with(user: MatrixTestClient, count: int, each: dict[str, int]) -> dict[str, str]:
    """Join `count` new rooms; returns correspondent -> room once each room holds as many
    messages as `each` says for the correspondent whose name starts its bodies."""
    found: dict[str, str] = {}
    for _ in range(count):
        room = await user.wait_for_room_invite(timeout=60)
        await user.join(room)
        await wait_async(lambda r=room: _any(user, r), 60, "a first message")
        first = (await bodies(user, room))[0]
        found[first.split()[0]] = room
    for sender, room in found.items():
        async def complete(r: str = room, n: int = each[sender]) -> bool:
            return len(await bodies(user, r)) >= n
        await wait_async(complete, 60, f"{each[sender]} messages from {sender}")
    return found


async def _any(user: MatrixTestClient, room: str) -> bool:
    return bool(await bodies(user, room))


async def wait_async(pred: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def uid_order(mail_stack: MailStack, me: str) -> dict[str, list[str]]:
    """Correspondent -> subjects of their mail, in the mailbox's UID order."""
    order: dict[str, list[str]] = {}
    for stored in sorted(read_folder(mail_stack, me), key=lambda m: m.uid):
        subject = str(stored.message["Subject"])
        order.setdefault(subject.split()[0], []).append(subject)
    return order


async def test_interleaved_senders_reach_every_room_in_mailbox_order(
    email_config: Path, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    await logged_in_then_stopped(email_config, user, mail_stack, mailbox)
    senders = [f"s{i}@example.org" for i in range(4)]
    for n in range(5):
        for sender in senders:
            send(mail_stack, me, sender, f"{sender} note {n}")
    await asyncio.to_thread(wait_in_inbox, mail_stack, me, 20)
    expected = uid_order(mail_stack, me)

    bridge = await start_bridge(email_config, connector_name="email")
    try:
        rooms = await rooms_with(user, len(senders), {s: 5 for s in senders})
        assert sorted(rooms) == senders
        for sender, room in rooms.items():
            assert await bodies(user, room) == expected[sender]
    finally:
        await bridge.stop()


async def test_a_held_room_does_not_hold_back_another_nor_let_the_checkpoint_pass_it(
    email_config: Path, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    held_room: HeldRoom,
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    await logged_in_then_stopped(email_config, user, mail_stack, mailbox)
    send(mail_stack, me, SLOW, f"{SLOW} first")
    await asyncio.to_thread(wait_in_inbox, mail_stack, me, 1)
    for n in range(3):
        send(mail_stack, me, "fast@example.org", f"fast@example.org note {n}")
    await asyncio.to_thread(wait_in_inbox, mail_stack, me, 4)
    uids = {s: [m.uid for m in read_folder(mail_stack, me) if s in str(m.message["From"])]
            for s in (SLOW, "fast@example.org")}
    assert max(uids[SLOW]) < min(uids["fast@example.org"])

    bridge = await start_bridge(email_config, connector_name="email")
    try:
        await asyncio.wait_for(held_room.reached.wait(), 30)
        fast = await rooms_with(user, 1, {"fast@example.org": 3})
        assert list(fast) == ["fast@example.org"]
        # all of the fast room is in Matrix while the slow room still holds its (earlier) mail
        assert not held_room.release.is_set()
        checkpoint = await email_client(bridge, user).checkpoints.get("INBOX")
        assert checkpoint is not None and checkpoint.last_uid < uids[SLOW][0]

        held_room.release.set()
        slow = await rooms_with(user, 1, {SLOW: 1})
        assert await bodies(user, slow[SLOW]) == [f"{SLOW} first"]

        async def checkpoint_at_the_end() -> bool:
            cp = await email_client(bridge, user).checkpoints.get("INBOX")
            return cp is not None and cp.last_uid == max(uids["fast@example.org"])
        await wait_async(checkpoint_at_the_end, 30, "the checkpoint past every mail")
    finally:
        await bridge.stop()


async def test_a_mail_held_at_shutdown_comes_after_the_restart_and_nothing_twice(
    email_config: Path, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    held_room: HeldRoom,
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    await logged_in_then_stopped(email_config, user, mail_stack, mailbox)
    send(mail_stack, me, SLOW, f"{SLOW} first")
    await asyncio.to_thread(wait_in_inbox, mail_stack, me, 1)
    for n in range(3):
        send(mail_stack, me, "fast@example.org", f"fast@example.org note {n}")
    await asyncio.to_thread(wait_in_inbox, mail_stack, me, 4)
    last_uid = max(m.uid for m in read_folder(mail_stack, me))

    bridge: Bridge | None = await start_bridge(email_config, connector_name="email")
    try:
        await asyncio.wait_for(held_room.reached.wait(), 30)
        fast = await rooms_with(user, 1, {"fast@example.org": 3})
        await bridge.stop()  # the slow room's mail was never posted
        bridge = None
        held_room.release.set()

        bridge = await start_bridge(email_config, connector_name="email")
        slow = await rooms_with(user, 1, {SLOW: 1})
        assert await bodies(user, slow[SLOW]) == [f"{SLOW} first"]
        client = email_client(bridge, user)

        async def caught_up() -> bool:
            cp = await client.checkpoints.get("INBOX")
            return cp is not None and cp.last_uid == last_uid
        # the fast room's mails were fetched again (the checkpoint was below the held mail)...
        await wait_async(caught_up, 30, "the checkpoint past every mail")
        # ...and not posted twice
        assert await bodies(user, fast["fast@example.org"]) == [
            f"fast@example.org note {n}" for n in range(3)]
    finally:
        if bridge is not None:
            await bridge.stop()


async def test_mail_arriving_while_a_room_is_held_is_not_held_back(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    held_room: HeldRoom,
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    await logged_in_and_synced(email_bridge, user, mail_stack, mailbox)
    send(mail_stack, me, SLOW, f"{SLOW} first")
    await asyncio.wait_for(held_room.reached.wait(), 30)

    send(mail_stack, me, "fast@example.org", "fast@example.org note 0")  # a later IMAP catch-up
    fast = await rooms_with(user, 1, {"fast@example.org": 1})
    assert list(fast) == ["fast@example.org"] and not held_room.release.is_set()

    held_room.release.set()
    slow = await rooms_with(user, 1, {SLOW: 1})
    assert await bodies(user, slow[SLOW]) == [f"{SLOW} first"]
