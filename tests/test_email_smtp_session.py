"""The login's kept SMTP session, seen from the real Postfix: its log names the client port of the
session that carried each mail (`devstack.postfix_log`), and how each session ended.

A session is reused for mail after mail, replaced when Postfix dropped it or stopped answering
(the mail then still goes out once), and closed (QUIT) when idle and at logout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
import os
from pathlib import Path
import signal
import time
from typing import Any

import pytest

from bridge.core.bridge import Bridge
from devstack.bot_flows import wait_notice
from devstack.matrix_client import MatrixTestClient
from devstack.postfix_log import Submission, disconnect_counts
from devstack.stack import MailStack, Synapse
from tests.helpers.email_e2e import logged_in, mails_in, wait_for_mail
from tests.helpers.harness import BridgeSetup, start_bridge
from tests.test_email_outbound_e2e import SEND_STATUS, for_event, start_chat, wait_status

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


@pytest.fixture
async def bridge_with(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, mail_stack: MailStack,
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[Bridge]]]:
    """`await bridge_with(**options)`: an email bridge with some `network.email` options set."""
    started: list[Bridge] = []

    async def start(**options: Any) -> Bridge:
        network = {"ca_file": str(mail_stack.ca_file), "imap.poll_interval": 1,
                   "outbound.retry_schedule": [1, 2, 30], **options}
        config = bridge_setups["email"].config_for(tmp_path.name, hs_url=synapse.hs_url,
                                                   db_url=db_url, network=network)
        started.append(await start_bridge(config, connector_name="email"))
        return started[-1]

    yield start
    for bridge in started:
        await bridge.stop()


@pytest.fixture
def peer(mail_stack: MailStack) -> str:
    return mail_stack.add_user(f"peer{os.urandom(4).hex()}", "pw-peer-secret")


async def wait_submissions(mail_stack: MailStack, me: str, count: int,
                           timeout: float = 15.0) -> list[Submission]:
    """The first `count` mails Postfix logged for `me` (its log is written a moment later)."""
    deadline = time.monotonic() + timeout
    while len(found := mail_stack.submissions(me)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Postfix logged {len(found)} of {count} mails from {me}")
        await asyncio.sleep(0.05)
    return found[:count]


async def wait_session_end(mail_stack: MailStack, port: int, timeout: float = 15.0) -> dict[str, int]:
    """The command counts Postfix logs when the session from client `port` ends."""
    deadline = time.monotonic() + timeout
    while (counts := disconnect_counts(mail_stack.postfix_log(), port)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the SMTP session from port {port} did not end")
        await asyncio.sleep(0.05)
    return counts


async def send_and_wait(user: MatrixTestClient, room: str, mail_stack: MailStack, peer: str,
                        text: str) -> str:
    event_id = await user.send_text(room, text)
    await wait_for_mail(mail_stack, peer, for_event(event_id))
    await wait_status(user, room, event_id, "SUCCESS")
    return event_id


async def copies(mail_stack: MailStack, address: str, event_id: str, folder: str = "INBOX") -> int:
    return len([m for m in await mails_in(mail_stack, address, folder) if for_event(event_id)(m)])


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process `pid` stopped (SIGSTOP): its connections stay open and nothing answers."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_mails_in_a_row_go_over_one_session(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], peer: str,
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    management = await logged_in(email_bridge, user, mail_stack, mailbox)
    room = await start_chat(email_bridge, user, management, peer)
    events = [await user.send_text(room, f"Subject: In a row\nmail {n}") for n in range(4)]
    for event_id in events:
        await wait_status(user, room, event_id, "SUCCESS")
    submitted = await wait_submissions(mail_stack, me, 4)
    assert len({s.port for s in submitted}) == 1, submitted
    for event_id in events:  # each once, to the peer and in Sent
        await wait_for_mail(mail_stack, me, for_event(event_id), folder="\\Sent")
        assert await copies(mail_stack, peer, event_id) == 1
        assert await copies(mail_stack, me, event_id, "\\Sent") == 1


async def test_a_session_postfix_dropped_is_replaced_and_the_next_mail_goes_once(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], peer: str,
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    management = await logged_in(email_bridge, user, mail_stack, mailbox)
    room = await start_chat(email_bridge, user, management, peer)
    await send_and_wait(user, room, mail_stack, peer, "Subject: Before\nbefore the restart")
    await asyncio.to_thread(mail_stack.restart_postfix)
    after = await send_and_wait(user, room, mail_stack, peer, "after the restart")
    first, second = await wait_submissions(mail_stack, me, 2)
    assert first.port != second.port
    assert await copies(mail_stack, peer, after) == 1


async def test_a_session_that_stopped_answering_is_given_up_and_the_mail_goes_once(
    bridge_with: Callable[..., Awaitable[Bridge]], matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], peer: str,
) -> None:
    """The server process of the kept session hangs: the mail's MAIL FROM times out, and the
    mail goes out at once on a new session, with no retry reported to the room."""
    bridge = await bridge_with(timeout=3)
    user = await matrix_user()
    me = mailbox[0]
    management = await logged_in(bridge, user, mail_stack, mailbox)
    room = await start_chat(bridge, user, management, peer)
    await send_and_wait(user, room, mail_stack, peer, "Subject: Hang\nbefore the hang")
    [kept] = await wait_submissions(mail_stack, me, 1)
    with stopped(kept.pid):
        after = await send_and_wait(user, room, mail_stack, peer, "while the old session hangs")
    _, replaced = await wait_submissions(mail_stack, me, 2)
    assert replaced.port != kept.port
    assert await copies(mail_stack, peer, after) == 1
    statuses = [e["content"]["status"] for e in user.timeline[room] if e.get("type") == SEND_STATUS
                and e["content"].get("m.relates_to", {}).get("event_id") == after]
    assert statuses == ["SUCCESS"]


async def test_an_idle_session_is_closed(
    bridge_with: Callable[..., Awaitable[Bridge]], matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], peer: str,
) -> None:
    bridge = await bridge_with(**{"outbound.idle_close_seconds": 1})
    user = await matrix_user()
    management = await logged_in(bridge, user, mail_stack, mailbox)
    room = await start_chat(bridge, user, management, peer)
    await send_and_wait(user, room, mail_stack, peer, "Subject: Idle\nthen nothing")
    [kept] = await wait_submissions(mail_stack, mailbox[0], 1)
    assert (await wait_session_end(mail_stack, kept.port)).get("quit") == 1


async def test_logout_closes_the_session(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], peer: str,
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    management = await logged_in(email_bridge, user, mail_stack, mailbox)
    room = await start_chat(email_bridge, user, management, peer)
    await send_and_wait(user, room, mail_stack, peer, "Subject: Bye\nlast mail")
    [kept] = await wait_submissions(mail_stack, me, 1)
    assert disconnect_counts(mail_stack.postfix_log(), kept.port) is None  # still open
    await user.send_text(management, f"logout {me} --keep-rooms")
    await wait_notice(user, management, email_bridge.bot_mxid, f"Logged out of {me}")
    assert (await wait_session_end(mail_stack, kept.port, timeout=5)).get("quit") == 1
