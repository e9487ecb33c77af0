"""Inbound mail across crashes at exact instructions: real Postfix, Dovecot and Synapse; the crash
itself is played by raising from the step after which the process would die."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bridge.connectors.email.client import EmailClient
from bridge.connectors.email.db import MailIndexRow
from bridge.core.bridge import Bridge
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack
from tests.helpers.email_e2e import by_body, logged_in, mail
from tests.helpers.harness import start_bridge

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


class SimulatedCrash(Exception):
    """The process dies here."""


@pytest.fixture
async def email_bridge(email_config: Path) -> AsyncIterator[Bridge]:
    bridge = await start_bridge(email_config, connector_name="email")
    yield bridge
    await bridge.stop()


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
