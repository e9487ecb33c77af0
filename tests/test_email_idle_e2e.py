"""Cheap idle mailboxes against the real Dovecot, Postfix and Synapse: every folder watched on one
connection with IMAP NOTIFY (no polling), the polling fallback where NOTIFY is switched off, and
mail read in another mail client (\\Seen set there) moving the user's read marker in Matrix.
Both database backends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
import time
from typing import Any

import pytest

from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack, Synapse
from tests.helpers.email_e2e import by_body, logged_in, mail
from tests.helpers.harness import BridgeSetup, start_bridge
from tests.test_double_puppet import joined_room_with
from tests.test_email_inbound_e2e import append

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
NEVER_S = 3600  # a poll interval no test waits for


def config(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, mail_stack: MailStack,
           tmp_path: Path, *, notify: bool = True, poll_s: float = NEVER_S,
           core: dict[str, Any] | None = None) -> Path:
    return bridge_setups["email"].config_for(
        tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
        network={"ca_file": str(mail_stack.ca_file), "imap.poll_interval": poll_s,
                 "imap.notify": notify},
        core=core or {})


def mark_seen(mail_stack: MailStack, address: str, subject: str) -> None:
    """What another mail client does when the user reads a mail there (plain imaplib)."""
    imap = mail_stack.imap_client(address)
    try:
        imap.select("INBOX")
        uids = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')[1][0].split()
        assert uids, f"no mail {subject!r} in {address}"
        status, _ = imap.uid("STORE", uids[-1].decode(), "+FLAGS", "(\\Seen)")
        assert status == "OK"
    finally:
        imap.logout()


async def fully_read(user: MatrixTestClient, room: str, timeout: float = 10.0) -> str:
    """The user's fully-read marker in `room` (room account data), once it is set."""
    deadline = time.monotonic() + timeout
    path = f"/user/{user.user_id}/rooms/{room}/account_data/m.fully_read"
    while True:
        try:
            return str((await user.request("GET", path))["event_id"])
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
        await user.sync_once(timeout_ms=200)


async def test_the_sent_folder_is_watched_without_polling(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, mail_stack: MailStack,
    mailbox: tuple[str, str], matrix_user: MakeUser, tmp_path: Path,
) -> None:
    """A mail sent from another client shows up from Sent although the bridge polls only once
    an hour: the server announced it (NOTIFY) on the connection that waits for INBOX."""
    bridge = await start_bridge(config(bridge_setups, synapse, db_url, mail_stack, tmp_path),
                                connector_name="email")
    try:
        user = await matrix_user()
        me = mailbox[0]
        await logged_in(bridge, user, mail_stack, mailbox)
        own = mail(f"Me <{me}>", ["Frank <frank@example.org>"], "From my phone", "Written on my phone")
        append(mail_stack, me, "Sent", own.as_bytes())
        await joined_room_with(user, "Written on my phone", timeout=60)
    finally:
        await bridge.stop()


async def test_without_notify_the_sent_folder_is_polled(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, mail_stack: MailStack,
    mailbox: tuple[str, str], matrix_user: MakeUser, tmp_path: Path,
) -> None:
    """The fallback (a server without NOTIFY; here switched off): INBOX is watched with IDLE,
    Sent is polled."""
    bridge = await start_bridge(config(bridge_setups, synapse, db_url, mail_stack, tmp_path,
                                       notify=False, poll_s=1), connector_name="email")
    try:
        user = await matrix_user()
        me = mailbox[0]
        await logged_in(bridge, user, mail_stack, mailbox)
        own = mail(f"Me <{me}>", ["Frank <frank@example.org>"], "Polled", "Found by polling Sent")
        append(mail_stack, me, "Sent", own.as_bytes())
        await joined_room_with(user, "Found by polling Sent", timeout=60)
    finally:
        await bridge.stop()


async def test_mail_read_in_another_client_moves_the_read_marker(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, mail_stack: MailStack,
    mailbox: tuple[str, str], matrix_user: MakeUser, tmp_path: Path,
) -> None:
    bridge = await start_bridge(config(bridge_setups, synapse, db_url, mail_stack, tmp_path,
                                       core={"double_puppet.enabled": True}),
                                connector_name="email")
    try:
        user = await matrix_user()
        me = mailbox[0]
        await logged_in(bridge, user, mail_stack, mailbox)
        for subject, text in (("Plans", "First of two"), ("More plans", "Second of two")):
            mail_stack.deliver(mail("Frank <frank@example.org>", [me], subject, text).as_bytes(),
                               [me], "frank@example.org")
        room = await joined_room_with(user, "First of two", timeout=60)
        second = await user.wait_for_event(room, by_body("Second of two"))

        mark_seen(mail_stack, me, "More plans")

        def read_up_to() -> str | None:
            for receipt in user.ephemeral.get(room, []):
                if receipt.get("type") != "m.receipt":
                    continue
                for event_id, kinds in receipt["content"].items():
                    if user.user_id in kinds.get("m.read", {}):
                        return str(event_id)
            return None

        assert await user.wait_for(read_up_to, timeout=60) == second["event_id"]
        assert await fully_read(user, room) == second["event_id"]
    finally:
        await bridge.stop()
