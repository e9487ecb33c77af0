"""How email rooms read in a Matrix client (both database backends, real servers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import uuid

import pytest

from bridge.core.bridge import Bridge
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack
from tests.helpers.email_e2e import logged_in
from tests.test_email_outbound_e2e import start_chat

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


async def test_direct_chat_has_the_address_as_topic_and_a_readable_channel_name(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
) -> None:
    correspondent = mail_stack.add_user(f"kim{uuid.uuid4().hex[:8]}", "pw-kim-secret")
    user = await matrix_user()
    management = await logged_in(email_bridge, user, mail_stack, mailbox)
    room = await start_chat(email_bridge, user, management, correspondent)
    state = {(e["type"], e.get("state_key")): e["content"] for e in await user.room_state(room)}
    assert state[("m.room.topic", "")]["topic"] == correspondent
    assert state[("m.room.name", "")]["name"] == correspondent
    (channel,) = [c["channel"] for (t, _), c in state.items() if t == "m.bridge"]
    assert channel["displayname"] == correspondent
