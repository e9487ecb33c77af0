"""Mail across crashes at exact instructions, both directions: real Postfix, Dovecot and Synapse;
the crash itself is played by raising from the step after which the process would die."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
import time
from typing import Any
import uuid

import pytest

from bridge.connectors.email.client import EmailClient
from bridge.connectors.email.db import MailIndexRow
from bridge.core.bridge import Bridge
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack
from tests.helpers.email_e2e import by_body, logged_in, mail, mails_in, wait_for_mail
from tests.helpers.harness import start_bridge
from tests.test_email_outbound_e2e import (
    People,
    blocks,
    email_bridge_with,
    for_event,
    people,
    start_chat,
    wait_status,
)

# Fixtures shared with the outbound tests: correspondents' mailboxes, recipient blocks, options.
__all__ = ["blocks", "email_bridge_with", "people"]

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


class SimulatedCrash(Exception):
    """The process dies here."""


def email_client(bridge: Bridge, user: MatrixTestClient) -> EmailClient:
    [login] = bridge.logins_of(user.user_id)
    assert isinstance(login.client, EmailClient)
    return login.client


async def test_crash_between_posting_and_indexing_keeps_the_thread_in_its_room(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    await logged_in(email_bridge, user, mail_stack, mailbox)
    client = email_client(email_bridge, user)
    first = mail("Hal <hal@example.org>", [me], "Budget", "Numbers for Q3")
    upsert = client.mail_index.upsert
    crashed: list[str] = []

    async def dies_before_indexing(row: MailIndexRow) -> None:
        if row.message_id == first["Message-ID"] and not crashed:
            crashed.append(row.message_id)
            raise SimulatedCrash()
        await upsert(row)

    monkeypatch.setattr(client.mail_index, "upsert", dies_before_indexing)
    mail_stack.deliver(first.as_bytes(), [me], "hal@example.org")
    dm = await user.wait_for_room_invite(timeout=20)
    await user.join(dm)
    root = await user.wait_for_event(dm, by_body("Numbers for Q3"))

    reply = mail("Hal <hal@example.org>", [me], "Re: Budget", "Revised numbers", reply_to=first)
    mail_stack.deliver(reply.as_bytes(), [me], "hal@example.org")
    threaded = await user.wait_for_event(dm, by_body("Revised numbers"), timeout=30)
    assert crashed == [first["Message-ID"]]
    assert threaded["content"]["m.relates_to"]["event_id"] == root["event_id"]
    indexed = await client.mail_index.get(client.login.login_id, first["Message-ID"])
    assert indexed is not None and indexed.portal_id == "dm:hal@example.org"


async def wait_copy_made(bridge: Bridge, event_id: str, timeout: float = 30.0) -> None:
    """Wait until the outbox row of `event_id` no longer owes its Sent-folder copy."""
    deadline = time.monotonic() + timeout
    while True:
        owed = await bridge.connector_db.fetchval(
            "SELECT copy_pending FROM email_outbox WHERE event_id=$1", event_id)
        if owed is not None and not owed:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Sent copy of {event_id} is still owed ({owed})")
        await asyncio.sleep(0.1)


async def sent_copies(mail_stack: MailStack, me: str, event_id: str) -> int:
    return len([m for m in await mails_in(mail_stack, me, "\\Sent") if for_event(event_id)(m)])


async def crash_around_the_sent_copy(
    email_config: Path, user: MatrixTestClient, mail_stack: MailStack, mailbox: tuple[str, str],
    recipient: str, monkeypatch: pytest.MonkeyPatch, *, after_append: bool,
) -> tuple[Bridge, str]:
    """Send one mail and crash right before (or right after) its APPEND to Sent; returns the
    restarted bridge and the Matrix event of the mail."""
    first = await start_bridge(email_config, connector_name="email")
    try:
        management = await logged_in(first, user, mail_stack, mailbox)
        room = await start_chat(first, user, management, recipient)
        client = email_client(first, user)
        crashed = asyncio.Event()
        if after_append:
            target, name = client.outbox.table, "copy_done"
        else:
            target, name = client, "copy_to_sent"
        real = getattr(target, name)

        async def dies(*args: Any) -> Any:
            if not crashed.is_set():
                if after_append:
                    await real(*args)
                crashed.set()
                raise SimulatedCrash()
            return await real(*args)

        monkeypatch.setattr(target, name, dies)
        event_id = await user.send_text(room, f"Subject: Filed once\nmail {uuid.uuid4().hex}")
        await asyncio.wait_for(crashed.wait(), 30)
    finally:
        await first.stop()
    assert await sent_copies(mail_stack, mailbox[0], event_id) == (1 if after_append else 0)
    return await start_bridge(email_config, connector_name="email"), event_id


async def test_sent_copy_owed_at_a_crash_is_made_after_the_restart(
    email_config: Path, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    people: People, monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = await matrix_user()
    bridge, event_id = await crash_around_the_sent_copy(
        email_config, user, mail_stack, mailbox, people.bob, monkeypatch, after_append=False)
    try:
        await wait_copy_made(bridge, event_id)
        assert await sent_copies(mail_stack, mailbox[0], event_id) == 1
    finally:
        await bridge.stop()


async def test_sent_copy_made_just_before_a_crash_is_not_made_twice(
    email_config: Path, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    people: People, monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = await matrix_user()
    bridge, event_id = await crash_around_the_sent_copy(
        email_config, user, mail_stack, mailbox, people.bob, monkeypatch, after_append=True)
    try:
        await wait_copy_made(bridge, event_id)
        assert await sent_copies(mail_stack, mailbox[0], event_id) == 1
    finally:
        await bridge.stop()


async def test_mail_waiting_for_a_retry_holds_the_later_mail_of_its_room(
    email_bridge_with: Callable[..., Awaitable[Bridge]], matrix_user: MakeUser, blocks: MailStack,
    mailbox: tuple[str, str], people: People,
) -> None:
    mail_stack = blocks
    bridge = await email_bridge_with(**{"outbound.retry_schedule": [4, 4, 30]})
    user = await matrix_user()
    bob = people.bob
    management = await logged_in(bridge, user, mail_stack, mailbox)
    room = await start_chat(bridge, user, management, bob)
    mail_stack.set_recipient_block(bob, "450 4.2.0 try later")
    first = await user.send_text(room, "Subject: In order\nfirst")
    await wait_status(user, room, first, "PENDING")
    mail_stack.clear_recipient_blocks()
    second = await user.send_text(room, "second")
    got_second = await wait_for_mail(mail_stack, bob, for_event(second), timeout=30)
    got_first = await wait_for_mail(mail_stack, bob, for_event(first))
    assert got_first.uid < got_second.uid
