"""Login states of a mailbox surfaced to the user: bad certificate, bad credentials, server down."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
import subprocess

import pytest

from devstack.bot_flows import email_login, management_room, notices, wait_notice
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack, Synapse
from tests.helpers.harness import BridgeSetup, start_bridge

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


def servers(mail_stack: MailStack) -> dict[str, str]:
    return {"imap": f"127.0.0.1:{mail_stack.imap_port}:starttls",
            "smtp": f"127.0.0.1:{mail_stack.submission_port}:starttls"}


async def test_untrusted_certificate_is_refused_at_login(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, tmp_path: Path,
    mail_stack: MailStack, mailbox: tuple[str, str], matrix_user: MakeUser,
) -> None:
    # No ca_file: the test servers' self-made CA is not in the system store.
    config = bridge_setups["email"].config_for(tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
                                               network={"ca_file": None})
    bridge = await start_bridge(config, connector_name="email")
    try:
        user = await matrix_user()
        room = await management_room(bridge, user)
        await email_login(bridge, user, room, *mailbox, imap=f"127.0.0.1:{mail_stack.imaps_port}:tls",
                          smtp=f"127.0.0.1:{mail_stack.submission_port}:starttls", expect="Login failed")
        notice = (await wait_notice(user, room, bridge.bot_mxid, "Login failed"))[-1]
        lines = notice.splitlines()
        imap_line = next(i for i, line in enumerate(lines) if line.startswith("IMAP ("))
        smtp_line = next(i for i, line in enumerate(lines) if line.startswith("SMTP ("))
        for i in (imap_line, smtp_line):  # each server: what failed, then what to do
            assert "certificate" in lines[i], notice
            assert "ask the bridge admin" in lines[i + 1] and "`network.email.ca_file`" in lines[i + 1]
        assert await bridge.logins_table.for_user(user.user_id) == []
    finally:
        await bridge.stop()


async def test_runtime_states_are_announced(
    email_config: Path, mail_stack: MailStack, mailbox: tuple[str, str], matrix_user: MakeUser,
) -> None:
    address, password = mailbox
    bridge = await start_bridge(email_config, connector_name="email")
    try:
        user = await matrix_user()
        room = await management_room(bridge, user)
        await email_login(bridge, user, room, address, password, **servers(mail_stack))
        [login] = bridge.logins_of(user.user_id)
        login_id = login.id
        await user.wait_for(lambda: bridge.logins[login_id].state.value == "CONNECTED")

        # The server goes away: a transient disconnect, then recovery when it is back.
        # The server crashes (in a thread: the bridge shares this event loop). A clean stop would
        # do too, but Dovecot keeps an idle session open for 30 s while it shuts down.
        await asyncio.to_thread(mail_stack.dovecot.process.crash)
        try:
            await wait_notice(user, room, bridge.bot_mxid, "disconnected, retrying", timeout=30)
            assert (await bridge.logins_table.get(login_id)).state == "TRANSIENT_DISCONNECT"
        finally:
            await asyncio.to_thread(mail_stack.dovecot.start)
        await wait_notice(user, room, bridge.bot_mxid, "connected again", timeout=60)
        assert (await bridge.logins_table.get(login_id)).state == "CONNECTED"

        # The password changes on the server: bad credentials, and a new login fixes it.
        local = address.split("@")[0]
        await asyncio.to_thread(mail_stack.set_password, local, password + "-new")
        await asyncio.to_thread(subprocess.run, ["doveadm", "-c", str(mail_stack.dovecot.config), "kick",
                                                 address], check=True, capture_output=True)
        await wait_notice(user, room, bridge.bot_mxid, "refused the credentials", timeout=30)
        assert (await bridge.logins_table.get(login_id)).state == "BAD_CREDENTIALS"
        await user.send_text(room, "list-logins")
        await wait_notice(user, room, bridge.bot_mxid, f"• {address}: the server refused the credentials")
        await email_login(bridge, user, room, address, password + "-new", **servers(mail_stack))
        await wait_notice(user, room, bridge.bot_mxid, "connected again", count=2, timeout=30)
        assert len(await bridge.logins_table.for_user(user.user_id)) == 1
    finally:
        await bridge.stop()


async def test_a_wrong_address_is_asked_again_not_the_password(
    email_config: Path, mail_stack: MailStack, mailbox: tuple[str, str], matrix_user: MakeUser,
) -> None:
    address, password = mailbox
    bridge = await start_bridge(email_config, connector_name="email")
    try:
        user = await matrix_user()
        room = await management_room(bridge, user)
        await user.send_text(room, "login")
        await wait_notice(user, room, bridge.bot_mxid, "Email address")
        await user.send_text(room, "alice at example")
        # the address is checked before anything else is asked
        await wait_notice(user, room, bridge.bot_mxid, "That is not an email address")
        await wait_notice(user, room, bridge.bot_mxid, "Email address", count=2)
        await user.send_text(room, address)
        await wait_notice(user, room, bridge.bot_mxid, "Password")
        await user.send_text(room, password)
        await wait_notice(user, room, bridge.bot_mxid, "IMAP server")
        assert len([n for n in notices(user, room, bridge.bot_mxid) if n.startswith("Password")]) == 1
    finally:
        await bridge.stop()


async def test_an_answer_handled_again_is_not_a_second_answer(
    email_config: Path, mail_stack: MailStack, mailbox: tuple[str, str], matrix_user: MakeUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The inbox retries a handler that failed; a failure after the flow took the address (here
    while checking the room before asking for the password — a homeserver hiccup no real server
    produces on demand) must not make the retry feed the address in as the password."""
    address, password = mailbox
    bridge = await start_bridge(email_config, connector_name="email")
    try:
        commands = bridge.matrix.commands
        check = commands._secret_safe_room
        failures = [RuntimeError("the homeserver did not answer")]

        async def flaky_check(*args: object, **kwargs: object) -> bool:
            if failures:
                raise failures.pop()
            return await check(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(commands, "_secret_safe_room", flaky_check)
        bridge.processor.retry_delay = 0.05
        user = await matrix_user()
        room = await management_room(bridge, user)
        notice = await email_login(bridge, user, room, address, password, **servers(mail_stack))
        assert f"Logged in as {address}" in notice, notices(user, room, bridge.bot_mxid)
        assert not failures  # the fault was played
    finally:
        await bridge.stop()
