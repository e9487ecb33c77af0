"""Server settings found from the address, through the bot, against a loopback DNS server and
autoconfig site; the suggested servers are the real Dovecot and Postfix."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from bridge.core.bridge import Bridge
from devstack.bot_flows import management_room, wait_notice
from devstack.discovery_rig import AutoconfigSite, LoopbackDns, autoconfig_xml
from devstack.matrix_client import MatrixTestClient
from devstack.oauth_issuer import CLIENT_ID, CLIENT_SECRET
from devstack.stack import MailStack, Synapse
from tests.helpers.harness import BridgeSetup, start_bridge

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
AUTOCONFIG_PATH = "/mail/config-v1.1.xml"


@pytest.fixture(scope="session")
def dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def autoconfig_site() -> Iterator[AutoconfigSite]:
    site = AutoconfigSite()
    site.start()
    yield site
    site.stop()


@pytest.fixture
def zone(dns: LoopbackDns, autoconfig_site: AutoconfigSite) -> Iterator[LoopbackDns]:
    """The DNS server, empty at the start and the end of each test."""
    dns.set_zone("")
    autoconfig_site.documents.clear()
    yield dns
    dns.set_zone("")
    autoconfig_site.documents.clear()


def rig_provider_by_mx(stack: MailStack) -> dict[str, object]:
    issuer = stack.issuer
    return {"id": "rig", "name": "Rig Mail", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "authorize_url": issuer.authorize_url, "token_url": issuer.token_url,
            "scopes": ["mail"], "mx_suffixes": [".mx.rig.test"],
            "imap": f"127.0.0.1:{stack.imap_port}:starttls",
            "smtp": f"127.0.0.1:{stack.submission_port}:starttls"}


@pytest.fixture
async def discovering_bridge(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str,
                             mail_stack: MailStack, tmp_path: Path,
                             zone: LoopbackDns) -> AsyncIterator[Bridge]:
    config = bridge_setups["email"].config_for(
        tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
        network={"ca_file": str(mail_stack.ca_file), "imap.poll_interval": 1,
                 "discovery.enabled": True, "dns.nameserver": zone.nameserver,
                 "discovery.timeout": 5,
                 "oauth.providers": [rig_provider_by_mx(mail_stack)]})
    bridge = await start_bridge(config, connector_name="email")
    yield bridge
    await bridge.stop()


async def answer_address_and_password(bridge: Bridge, user: MatrixTestClient,
                                      mailbox: tuple[str, str]) -> str:
    room = await management_room(bridge, user)
    await user.send_text(room, "login")
    await wait_notice(user, room, bridge.bot_mxid, "Email address")
    await user.send_text(room, mailbox[0])
    await wait_notice(user, room, bridge.bot_mxid, "Password")
    await user.send_text(room, mailbox[1])
    await wait_notice(user, room, bridge.bot_mxid, "IMAP server")
    return room


async def accept_suggestions(bridge: Bridge, user: MatrixTestClient, room: str,
                             address: str) -> None:
    await user.send_text(room, "-")
    await wait_notice(user, room, bridge.bot_mxid, "SMTP server")
    await user.send_text(room, "-")
    await wait_notice(user, room, bridge.bot_mxid, "Your name")
    await user.send_text(room, "-")
    await wait_notice(user, room, bridge.bot_mxid, f"Logged in as {address}", timeout=30)


async def test_autoconfig_settings_are_offered_and_work(
    discovering_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], zone: LoopbackDns, autoconfig_site: AutoconfigSite,
) -> None:
    zone.set_zone(f"autoconfig.{mail_stack.domain}. 60 IN A {autoconfig_site.address}\n")
    autoconfig_site.documents[AUTOCONFIG_PATH] = autoconfig_xml(
        mail_stack.domain, ("localhost", mail_stack.imap_port, "STARTTLS"),
        ("localhost", mail_stack.submission_port, "STARTTLS"))
    user = await matrix_user()
    room = await answer_address_and_password(discovering_bridge, user, mailbox)
    found = (await wait_notice(user, room, discovering_bridge.bot_mxid, "Settings found"))[-1]
    assert f"the autoconfig file at autoconfig.{mail_stack.domain}" in found, found
    assert f"IMAP localhost:{mail_stack.imap_port}:starttls" in found, found
    assert f"SMTP localhost:{mail_stack.submission_port}:starttls" in found, found
    await accept_suggestions(discovering_bridge, user, room, mailbox[0])


async def test_srv_records_are_offered_and_work(
    discovering_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], zone: LoopbackDns,
) -> None:
    domain = mail_stack.domain
    zone.set_zone(f"_imaps._tcp.{domain}. 60 IN SRV 0 0 0 .\n"  # RFC 6186: not offered
                  f"_imap._tcp.{domain}. 60 IN SRV 10 1 {mail_stack.imap_port} localhost.\n"
                  f"_submission._tcp.{domain}. 60 IN SRV 10 1 {mail_stack.submission_port} localhost.\n")
    user = await matrix_user()
    room = await answer_address_and_password(discovering_bridge, user, mailbox)
    found = (await wait_notice(user, room, discovering_bridge.bot_mxid, "Settings found"))[-1]
    assert f"the DNS SRV records of {domain}" in found, found
    assert f"IMAP localhost:{mail_stack.imap_port}:starttls" in found, found
    assert f"SMTP localhost:{mail_stack.submission_port}:starttls" in found, found
    await accept_suggestions(discovering_bridge, user, room, mailbox[0])


async def test_a_domain_hosted_by_a_known_provider_gets_its_sign_in(
    discovering_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], zone: LoopbackDns,
) -> None:
    zone.set_zone(f"{mail_stack.domain}. 60 IN MX 10 in1.mx.rig.test.\n")
    user = await matrix_user()
    room = await management_room(discovering_bridge, user)
    await user.send_text(room, "login")
    await wait_notice(user, room, discovering_bridge.bot_mxid, "Email address")
    await user.send_text(room, mailbox[0])
    await wait_notice(user, room, discovering_bridge.bot_mxid, "Sign in with Rig Mail")


async def test_a_discovery_that_finds_nothing_says_so(
    discovering_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], zone: LoopbackDns,
) -> None:
    user = await matrix_user()
    room = await answer_address_and_password(discovering_bridge, user, mailbox)
    notice = (await wait_notice(user, room, discovering_bridge.bot_mxid, "No settings were found"))[-1]
    assert f"for {mail_stack.domain}" in notice, notice
    # the guess is offered, and typing the servers by hand still works
    await user.send_text(room, f"127.0.0.1:{mail_stack.imap_port}:starttls")
    await wait_notice(user, room, discovering_bridge.bot_mxid, "SMTP server")
    await user.send_text(room, f"127.0.0.1:{mail_stack.submission_port}:starttls")
    await wait_notice(user, room, discovering_bridge.bot_mxid, "Your name")
    await user.send_text(room, "-")
    await wait_notice(user, room, discovering_bridge.bot_mxid, f"Logged in as {mailbox[0]}",
                      timeout=30)


async def test_a_big_providers_address_gets_its_servers_and_its_hint(
    discovering_bridge: Bridge, matrix_user: MakeUser,
) -> None:
    # no Google client is configured: a password (an app password) is the way, and Google says how
    user = await matrix_user()
    room = await management_room(discovering_bridge, user)
    await user.send_text(room, "login")
    await wait_notice(user, room, discovering_bridge.bot_mxid, "Email address")
    await user.send_text(room, "someone@gmail.com")
    hint = (await wait_notice(user, room, discovering_bridge.bot_mxid, "App passwords"))[-1]
    assert "https://myaccount.google.com/apppasswords" in hint, hint
    await wait_notice(user, room, discovering_bridge.bot_mxid, "Password")
    await user.send_text(room, "an app password")
    found = (await wait_notice(user, room, discovering_bridge.bot_mxid, "Settings found"))[-1]
    assert "Google hosts gmail.com" in found and "IMAP imap.gmail.com:993:tls" in found, found
    await user.send_text(room, "cancel")
    await wait_notice(user, room, discovering_bridge.bot_mxid, "Login cancelled")


async def test_discovery_of_a_user_reaches_only_servers_that_user_may_name(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, mail_stack: MailStack,
    tmp_path: Path, zone: LoopbackDns, autoconfig_site: AutoconfigSite, matrix_user: MakeUser,
    mailbox: tuple[str, str],
) -> None:
    """An autoconfig host inside the operator's network (here: a loopback address the operator
    did not allow) is never fetched for a user who is not an admin; nothing is found instead."""
    config = bridge_setups["email"].config_for(
        tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
        network={"ca_file": str(mail_stack.ca_file), "discovery.enabled": True,
                 "dns.nameserver": zone.nameserver, "discovery.timeout": 5,
                 "allowed_private_servers": ["127.0.0.1"]})  # the mail servers, not the site
    zone.set_zone(f"autoconfig.{mail_stack.domain}. 60 IN A {autoconfig_site.address}\n")
    autoconfig_site.documents[AUTOCONFIG_PATH] = autoconfig_xml(
        mail_stack.domain, ("localhost", mail_stack.imap_port, "STARTTLS"),
        ("localhost", mail_stack.submission_port, "STARTTLS"))
    autoconfig_site.requests.clear()
    bridge = await start_bridge(config, connector_name="email")
    try:
        user = await matrix_user()
        room = await answer_address_and_password(bridge, user, mailbox)
        notice = (await wait_notice(user, room, bridge.bot_mxid, "No settings were found"))[-1]
        assert f"for {mail_stack.domain}" in notice, notice
        assert autoconfig_site.requests == []
    finally:
        await bridge.stop()
