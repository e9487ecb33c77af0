"""Double puppeting against the real Synapse: mail the user wrote in another client (found in
Sent) appears as the user's real Matrix account, and is not mailed again. Both database backends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
import time

import pytest

from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack, Synapse
from tests.helpers.email_e2e import logged_in, mail
from tests.helpers.harness import BridgeSetup, start_bridge
from tests.test_email_inbound_e2e import append

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


def room_with(user: MatrixTestClient, text: str) -> str | None:
    for room, events in user.timeline.items():
        if any(text in str(e.get("content", {}).get("body", "")) for e in events):
            return room
    return None


async def joined_room_with(user: MatrixTestClient, text: str, timeout: float = 30.0) -> str:
    """Join every invite until a room shows `text` (the bridge may join the user itself)."""
    deadline = time.monotonic() + timeout
    while (room := room_with(user, text)) is None:
        for invited in [r for r in user.invites if r not in user.joined]:
            await user.join(invited)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no room shows {text!r}")
        await user.sync_once(timeout_ms=500)
    return room


async def test_mail_from_sent_appears_as_the_real_user(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, mail_stack: MailStack,
    mailbox: tuple[str, str], matrix_user: MakeUser, tmp_path: Path,
) -> None:
    config = bridge_setups["email"].config_for(
        tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
        network={"ca_file": str(mail_stack.ca_file), "imap.poll_interval": 1},
        core={"double_puppet.enabled": True})
    bridge = await start_bridge(config, connector_name="email")
    try:
        user = await matrix_user()
        me = mailbox[0]
        await logged_in(bridge, user, mail_stack, mailbox)
        own = mail(f"Me <{me}>", ["Frank <frank@example.org>"], "From my phone", "Sent from elsewhere")
        append(mail_stack, me, "Sent", own.as_bytes())
        room = await joined_room_with(user, "Sent from elsewhere")
        event = next(e for e in user.timeline[room] if "Sent from elsewhere" in
                     str(e.get("content", {}).get("body", "")))
        assert event["sender"] == user.user_id

        later = mail("Frank <frank@example.org>", [me], "Re: From my phone", "got it")
        mail_stack.deliver(later.as_bytes(), [me], "frank@example.org")
        reply = await user.wait_for_event(room, lambda e: "got it" in str(e["content"].get("body", "")))
        assert reply["sender"] == bridge.ghosts.mxid("frank@example.org")
        # The bridge's own post as the user is no action of the user: nothing was sent for it.
        statuses = [e for e in user.timeline[room] if e.get("type") == "com.beeper.message_send_status"]
        assert statuses == []
        assert await bridge.messages.by_mxid(event["event_id"]) is not None
    finally:
        await bridge.stop()


async def test_a_forged_mail_from_the_users_address_is_not_posted_as_the_user(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, mail_stack: MailStack,
    mailbox: tuple[str, str], matrix_user: MakeUser, tmp_path: Path,
) -> None:
    config = bridge_setups["email"].config_for(
        tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
        network={"ca_file": str(mail_stack.ca_file), "imap.poll_interval": 1},
        core={"double_puppet.enabled": True})
    bridge = await start_bridge(config, connector_name="email")
    try:
        user = await matrix_user()
        me = mailbox[0]
        await logged_in(bridge, user, mail_stack, mailbox)
        forged = mail(f"Me <{me}>", ["Frank <frank@example.org>"], "Urgent", "forged in my name")
        mail_stack.deliver(forged.as_bytes(), [me], "mallory@example.org")
        room = await joined_room_with(user, "forged in my name")
        event = next(e for e in user.timeline[room] if "forged in my name" in
                     str(e.get("content", {}).get("body", "")))
        assert event["sender"] != user.user_id
    finally:
        await bridge.stop()
