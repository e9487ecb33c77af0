"""Address squatting: a login is the bridge's own (its own ID, not the typed address). Two Matrix
users logging in to the same mailbox get two logins that never share data; a logout deletes what
belonged to the login, its unsent mail included (real Synapse, Dovecot and Postfix)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
import time
import uuid

import pytest

from bridge.core.bridge import Bridge
from devstack.bot_flows import wait_notice
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack
from tests.helpers.email_e2e import logged_in, mails_in, wait_for_mail
from tests.test_email_outbound_e2e import for_event, start_chat, wait_status

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
TABLES = ("email_outbox", "email_mail", "email_folder_checkpoint", "email_portal_person")


@pytest.fixture
def correspondent(mail_stack: MailStack) -> Iterator[str]:
    """A fresh mailbox to write to; any recipient block on the stack is lifted afterwards."""
    yield mail_stack.add_user(f"bob{uuid.uuid4().hex[:8]}", "pw-bob")
    mail_stack.clear_recipient_blocks()


async def rows_of(bridge: Bridge, login_id: str) -> dict[str, int]:
    return {t: int(await bridge.connector_db.fetchval(f"SELECT COUNT(*) FROM {t} WHERE login_id=$1",
                                                      login_id)) for t in TABLES}


async def test_queued_mail_of_a_logged_out_login_is_never_sent_by_the_next_login(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    correspondent: str,
) -> None:
    owner, squatter = await matrix_user("owner"), await matrix_user("squatter")
    bot = email_bridge.bot_mxid
    owner_mgmt = await logged_in(email_bridge, owner, mail_stack, mailbox)
    room = await start_chat(email_bridge, owner, owner_mgmt, correspondent)
    mail_stack.set_recipient_block(correspondent, "450 4.2.0 try later")
    queued = await owner.send_text(room, "Subject: Private\nfor the correspondent only")
    await wait_status(owner, room, queued, "PENDING")
    [owner_login] = email_bridge.logins_of(owner.user_id)
    assert (await rows_of(email_bridge, owner_login.id))["email_outbox"] == 1

    await owner.send_text(owner_mgmt, f"logout {mailbox[0]} --keep-rooms")
    await wait_notice(owner, owner_mgmt, bot, f"Logged out of {mailbox[0]}")
    assert await rows_of(email_bridge, owner_login.id) == dict.fromkeys(TABLES, 0)

    # Another Matrix user logs in to the same address; the server would now accept the mail.
    mail_stack.clear_recipient_blocks()
    squatter_mgmt = await logged_in(email_bridge, squatter, mail_stack, mailbox)
    [squatter_login] = email_bridge.logins_of(squatter.user_id)
    assert squatter_login.id != owner_login.id
    squatter_room = await start_chat(email_bridge, squatter, squatter_mgmt, correspondent)
    later = await squatter.send_text(squatter_room, "Subject: Later\nqueued after the first one")
    await wait_for_mail(mail_stack, correspondent, for_event(later))
    # Its outbox has run (the later mail is there); the owner's mail, queued first, is not.
    assert not any(for_event(queued)(m) for m in await mails_in(mail_stack, correspondent))


async def test_second_matrix_user_of_a_mailbox_gets_a_login_that_never_sees_the_first(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    correspondent: str,
) -> None:
    owner, other = await matrix_user("owner"), await matrix_user("other")
    owner_mgmt = await logged_in(email_bridge, owner, mail_stack, mailbox)
    room = await start_chat(email_bridge, owner, owner_mgmt, correspondent)
    mail_stack.set_recipient_block(correspondent, "450 4.2.0 try later")
    queued = await owner.send_text(room, "Subject: Mine\nnot the other user's")
    await wait_status(owner, room, queued, "PENDING")
    [owner_login] = email_bridge.logins_of(owner.user_id)

    await logged_in(email_bridge, other, mail_stack, mailbox)
    [other_login] = email_bridge.logins_of(other.user_id)
    assert other_login.id != owner_login.id and owner_login.id in email_bridge.logins
    assert (await rows_of(email_bridge, other_login.id))["email_outbox"] == 0
    row = await email_bridge.connector_db.fetchrow(
        "SELECT login_id, message_id FROM email_outbox WHERE event_id=$1", queued)
    assert row["login_id"] == owner_login.id
    other_client = other_login.client
    assert other_client is not None
    assert await other_client.mail_index.get(other_login.id, row["message_id"]) is None  # type: ignore[attr-defined]

    # The owner's mail goes out through the owner's login, once.
    mail_stack.clear_recipient_blocks()
    await wait_status(owner, room, queued, "SUCCESS", timeout=30)
    sent = [m for m in await mails_in(mail_stack, correspondent) if for_event(queued)(m)]
    assert len(sent) == 1
    # Both logins run side by side (and are stopped connected, not half-way through connecting).
    await owner.wait_for(lambda: {owner_login.state.value, other_login.state.value} == {"CONNECTED"})


async def test_retention_prunes_sent_mail_handled_event_ids_and_rows_of_gone_logins(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    correspondent: str,
) -> None:
    user = await matrix_user()
    management = await logged_in(email_bridge, user, mail_stack, mailbox)
    room = await start_chat(email_bridge, user, management, correspondent)
    sent = await user.send_text(room, "Subject: Kept a while\nthen pruned")
    await wait_status(user, room, sent, "SUCCESS", timeout=30)
    [login] = email_bridge.logins_of(user.user_id)
    # Rows of a login that no longer exists (an older version kept them after logout).
    await email_bridge.connector_db.execute(
        "INSERT INTO email_mail (login_id, message_id, portal_id) VALUES ('gone', '<x@y>', 'dm:z')")
    await email_bridge.processor.drain()
    before = await rows_of(email_bridge, login.id)

    now = int(time.time() * 1000)
    await email_bridge.prune(now_ms=now)  # nothing is old yet: only the rows of the gone login
    assert await rows_of(email_bridge, "gone") == dict.fromkeys(TABLES, 0)
    assert await rows_of(email_bridge, login.id) == before

    days = 86_400_000
    await email_bridge.prune(now_ms=now + 8 * days)  # past both defaults (7 days)
    after = await rows_of(email_bridge, login.id)
    assert after["email_outbox"] == 0 and after["email_mail"] == before["email_mail"]
    # (Synapse may push more events meanwhile: what was there before is gone.)
    assert await email_bridge.db.fetchval(
        "SELECT COUNT(*) FROM matrix_event_inbox WHERE done=true AND received_at <= $1", now) == 0
    assert await email_bridge.db.fetchval(
        "SELECT COUNT(*) FROM as_transaction WHERE received_at <= $1", now) == 0
