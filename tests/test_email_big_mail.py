"""A mail with a file over the homeserver's upload limit never stalls the mailbox (real Postfix,
Dovecot and Synapse; the test rig lowers Synapse's `max_upload_size`, see `TEST_MAX_UPLOAD_SIZE`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import os

import pytest

from bridge.core.bridge import Bridge
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack
from tests.helpers.email_e2e import by_body, logged_in, mail

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


async def test_file_over_the_upload_limit_becomes_a_notice_and_later_mail_arrives(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str]
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    await logged_in(email_bridge, user, mail_stack, mailbox)
    limit = await email_bridge.upload_limit.get()
    assert limit is not None and limit < 12_000_000
    big = mail("Ida <ida@example.org>", [me], "Scans", "The scans are attached.")
    big.add_attachment(os.urandom(12_000_000), maintype="application", subtype="octet-stream",
                       filename="scans.bin")
    big.add_attachment(b"small but real\n", maintype="text", subtype="plain", filename="notes.txt")
    mail_stack.deliver(big.as_bytes(), [me], "ida@example.org")
    for i in range(3):
        mail_stack.deliver(mail("Ida <ida@example.org>", [me], f"Next {i}", f"after the big one {i}")
                           .as_bytes(), [me], "ida@example.org")

    dm = await user.wait_for_room_invite(timeout=30)
    await user.join(dm)
    await user.wait_for_event(dm, by_body("The scans are attached."), timeout=60)
    notice = await user.wait_for_event(dm, by_body("scans.bin"), timeout=30)
    assert notice["content"]["msgtype"] == "m.notice"
    assert "12.0 MB" in notice["content"]["body"] and "up to" in notice["content"]["body"]
    small = await user.wait_for_event(dm, lambda e: e["content"].get("body") == "notes.txt")
    assert small["content"]["msgtype"] == "m.file" and small["content"]["url"].startswith("mxc://")
    for i in range(3):
        await user.wait_for_event(dm, by_body(f"after the big one {i}"), timeout=30)
