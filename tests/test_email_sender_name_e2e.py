"""The sender's name in From:, through the bot and the real mail servers (both database backends)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote
import uuid

import pytest

from bridge.core.bridge import Bridge
from devstack.bot_flows import wait_notice
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack
from tests.helpers.email_e2e import logged_in, wait_for_mail
from tests.test_email_outbound_e2e import for_event, start_chat

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


@pytest.fixture
def correspondent(mail_stack: MailStack) -> str:
    return mail_stack.add_user(f"bob{uuid.uuid4().hex[:8]}", "pw-bob-secret")


async def test_mail_carries_the_matrix_display_name_by_default(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], correspondent: str,
) -> None:
    user = await matrix_user()
    await user.request("PUT", f"/profile/{quote(user.user_id)}/displayname",
                       {"displayname": "Zoë Q. Tester"})
    management = await logged_in(email_bridge, user, mail_stack, mailbox)
    room = await start_chat(email_bridge, user, management, correspondent)
    sent = await user.send_text(room, "Subject: Hello\nfirst words")
    got = await wait_for_mail(mail_stack, correspondent, for_event(sent))
    (sender,) = got.message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Zoë Q. Tester", mailbox[0])


async def test_set_name_changes_the_name_in_from(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], correspondent: str,
) -> None:
    user = await matrix_user()
    management = await logged_in(email_bridge, user, mail_stack, mailbox)
    await user.send_text(management, 'set-name "Alice Example"')
    await wait_notice(user, management, email_bridge.bot_mxid,
                      f"now sends as: Alice Example <{mailbox[0]}>")
    room = await start_chat(email_bridge, user, management, correspondent)
    sent = await user.send_text(room, "Subject: Named\nhello")
    got = await wait_for_mail(mail_stack, correspondent, for_event(sent))
    (sender,) = got.message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Alice Example", mailbox[0])
