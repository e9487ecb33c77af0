"""`sync` and `backfill` against the real mail servers (both database backends)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
import imaplib
import uuid

import pytest

from bridge.core.bridge import Bridge
from devstack.bot_flows import wait_notice
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack
from tests.helpers.email_e2e import by_body, logged_in, mail
from tests.test_email_outbound_e2e import email_bridge_with  # noqa: F401 - a fixture

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


def append(mail_stack: MailStack, address: str, folder: str, raw: bytes, when: datetime) -> None:
    imap = mail_stack.imap_client(address)
    try:
        if folder != "INBOX":
            imap.create(folder)
        status, data = imap.append(folder, None, imaplib.Time2Internaldate(when.timestamp()), raw)
        assert status == "OK", data
    finally:
        imap.logout()


async def test_sync_fetches_mail_of_a_polled_folder_at_once(
    email_bridge_with: Callable[..., Awaitable[Bridge]], matrix_user: MakeUser,  # noqa: F811
    mail_stack: MailStack, mailbox: tuple[str, str],
) -> None:
    # Archive is only polled hourly: without `sync`, its mail would wait an hour.
    bridge = await email_bridge_with(**{"imap.extra_folders": ["Archive"], "imap.poll_interval": 3600})
    me = mailbox[0]
    user = await matrix_user()
    management = await logged_in(bridge, user, mail_stack, mailbox)
    [login] = bridge.logins_of(user.user_id)
    await user.wait_for(lambda: login.state.value == "CONNECTED")
    now = datetime.now(UTC)
    await asyncio.to_thread(append, mail_stack, me, "Archive", mail(
        f"lou{uuid.uuid4().hex[:6]}@example.org", [me], "Filed", "filed away").as_bytes(), now)
    await user.send_text(management, "sync")
    await wait_notice(user, management, bridge.bot_mxid, f"Checking {me} for new messages now")
    room = await user.wait_for_room_invite(timeout=30)
    await user.join(room)
    await user.wait_for_event(room, by_body("filed away"))


async def test_backfill_in_a_room_brings_in_its_older_mail(
    email_bridge_with: Callable[..., Awaitable[Bridge]], matrix_user: MakeUser,  # noqa: F811
    mail_stack: MailStack, mailbox: tuple[str, str],
) -> None:
    bridge = await email_bridge_with(**{"backfill.max_messages": 1})
    me = mailbox[0]
    bob = f"bob{uuid.uuid4().hex[:6]}@example.org"
    start = datetime.now(UTC) - timedelta(hours=3)
    for n in range(3):
        await asyncio.to_thread(append, mail_stack, me, "INBOX", mail(
            bob, [me], f"Note {n}", f"note number {n}", date=start + timedelta(hours=n)).as_bytes(),
            start + timedelta(hours=n))
    user = await matrix_user()
    await logged_in(bridge, user, mail_stack, mailbox)
    room = await user.wait_for_room_invite(timeout=30)
    await user.join(room)
    await user.wait_for_event(room, by_body("note number 2"))
    assert not any("note number 0" in e["content"].get("body", "") for e in user.messages(room))
    await user.send_text(room, "!lb backfill 5")
    await wait_notice(user, room, bridge.bot_mxid, "Brought in 2 older messages of this room", timeout=30)
    for n in (0, 1):
        await user.wait_for_event(room, by_body(f"note number {n}"))
