"""Who may point the bridge at which server: a user who is not an admin can only use public
servers (plus the operator's allow-list), and a refused server answers exactly like an
unreachable one, so the login flow cannot map internal ports (real Synapse, Dovecot, Postfix)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
import re

import pytest

from bridge.connectors.email.login_problems import describe_unreachable
from bridge.connectors.email.server_policy import UNREACHABLE
from bridge.connectors.email.servers import parse_spec
from bridge.core.bridge import Bridge
from devstack.bot_flows import email_login, management_room, notices
from devstack.matrix_client import MatrixTestClient
from devstack.ports import free_port
from devstack.stack import MailStack, Synapse
from tests.helpers.harness import BridgeSetup, start_bridge

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


@pytest.fixture
async def public_only_bridge(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str,
                             mail_stack: MailStack, tmp_path: Path) -> AsyncIterator[Bridge]:
    """The email bridge with the default rule: public servers only (the rig allows loopback)."""
    config = bridge_setups["email"].config_for(
        tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
        network={"ca_file": str(mail_stack.ca_file), "allowed_private_servers": []})
    bridge = await start_bridge(config, connector_name="email")
    yield bridge
    await bridge.stop()


def without_ports(text: str) -> str:
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)


async def failure_for(bridge: Bridge, user: MatrixTestClient, mailbox: tuple[str, str],
                      imap: str, smtp: str) -> str:
    """The answer to a login with these servers (in a fresh management room of `user`)."""
    room = await management_room(bridge, user)
    await email_login(bridge, user, room, *mailbox, imap=imap, smtp=smtp, expect="Login failed")
    [failure] = [n for n in notices(user, room, bridge.bot_mxid) if "Login failed" in n]
    return failure


async def test_open_and_closed_private_ports_get_the_same_answer_and_no_login(
    public_only_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str],
) -> None:
    bridge = public_only_bridge
    user, other = await matrix_user(), await matrix_user()
    open_ports = await failure_for(bridge, user, mailbox,
                                   f"127.0.0.1:{mail_stack.imap_port}:starttls",
                                   f"127.0.0.1:{mail_stack.submission_port}:starttls")
    closed = free_port()
    closed_ports = await failure_for(bridge, other, mailbox, f"127.0.0.1:{closed}:starttls",
                                     f"127.0.0.1:{closed}:starttls")
    assert UNREACHABLE in open_ports
    assert without_ports(open_ports) == without_ports(closed_ports)
    assert bridge.logins_of(user.user_id) == bridge.logins_of(other.user_id) == []


async def test_an_admin_may_use_a_private_server(
    public_only_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str],
) -> None:
    bridge = public_only_bridge
    user = await matrix_user()
    bridge.permissions[user.user_id] = "admin"
    room = await management_room(bridge, user)
    await email_login(bridge, user, room, *mailbox, imap=f"127.0.0.1:{mail_stack.imap_port}:starttls",
                      smtp=f"127.0.0.1:{mail_stack.submission_port}:starttls")
    assert len(bridge.logins_of(user.user_id)) == 1


async def test_an_allowed_server_that_cannot_be_reached_gets_the_same_answer(
    email_config: Path, matrix_user: MakeUser, mailbox: tuple[str, str],
) -> None:
    """The rig allows loopback: a closed port there fails to connect, answered in the words of a
    refused server (no "connection refused" or "timed out" to tell ports apart)."""
    bridge = await start_bridge(email_config, connector_name="email")
    try:
        user = await matrix_user()
        closed = f"127.0.0.1:{free_port()}:starttls"
        failure = await failure_for(bridge, user, mailbox, closed, closed)
        spec = parse_spec("imap", closed)
        assert describe_unreachable("IMAP", spec) in failure
        assert describe_unreachable("SMTP", parse_spec("smtp", closed)) in failure
    finally:
        await bridge.stop()
