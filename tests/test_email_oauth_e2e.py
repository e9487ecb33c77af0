"""OAuth sign-in through the bot against the rig's issuer, Dovecot and Postfix.

The test plays the browser: it opens the sign-in link (authenticating at the issuer as the
mailbox owner) and either follows the redirect to the bridge's public callback or pastes the
address it was redirected to into the chat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
import logging
from pathlib import Path
import re
from typing import Any

import aiohttp
import pytest

from bridge.__main__ import example_for
from bridge.connectors import load_connector
from bridge.core.bridge import Bridge
from bridge.core.config import Config
from bridge.core.user_login import UserLogin
from devstack.bot_flows import management_room, notices, wait_notice
from devstack.matrix_client import MatrixTestClient
from devstack.oauth_issuer import CLIENT_ID, CLIENT_SECRET, OAuthIssuer
from devstack.ports import free_port
from devstack.stack import MailStack, Synapse
from tests.helpers.email_e2e import by_body, mail, wait_for_mail, with_subject
from tests.helpers.harness import BridgeSetup, start_bridge
from tests.test_email_outbound_e2e import for_event
from tests.test_email_smtp_session import wait_submissions

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
LINK = re.compile(r"Sign in with Rig Mail: (\S+)")
AGAIN = re.compile(r"Sign in again: <(\S+?)>")
# the bridge's notices about a login in trouble (bridge/core/bridge.py _STATE_TEXT)
PROVISIONING_SECRET = "provisioning-secret-" + "o" * 24
TROUBLE = ("refused the credentials", "disconnected, retrying", "error")


def rig_provider(stack: MailStack) -> list[dict[str, Any]]:
    issuer = stack.issuer
    return [{"id": "rig", "name": "Rig Mail", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
             "authorize_url": issuer.authorize_url, "token_url": issuer.token_url,
             "scopes": ["mail"], "domains": [stack.domain],
             "imap": f"127.0.0.1:{stack.imap_port}:starttls",
             "smtp": f"127.0.0.1:{stack.submission_port}:starttls"}]


def oauth_config(setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, stack: MailStack,
                 tmp_path: Path, *, public: bool) -> Path:
    setup = setups["email"]
    return setup.config_for(
        tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
        network={"ca_file": str(stack.ca_file), "imap.poll_interval": 1,
                 "outbound.retry_schedule": [1, 2, 30], "oauth.providers": rig_provider(stack)},
        core={"bridge.public_url": setup.public_url if public else None},
    )


@pytest.fixture
async def callback_bridge(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str,
                          mail_stack: MailStack, tmp_path: Path) -> AsyncIterator[Bridge]:
    """An email bridge with a public URL: the provider redirects to its callback."""
    bridge = await start_bridge(oauth_config(bridge_setups, synapse, db_url, mail_stack, tmp_path,
                                             public=True), connector_name="email")
    yield bridge
    await bridge.stop()


@pytest.fixture
async def paste_bridge(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str,
                       mail_stack: MailStack, tmp_path: Path) -> AsyncIterator[Bridge]:
    """An email bridge without a public URL: the user pastes the provider's redirect."""
    bridge = await start_bridge(oauth_config(bridge_setups, synapse, db_url, mail_stack, tmp_path,
                                             public=False), connector_name="email")
    yield bridge
    await bridge.stop()


def only_login(bridge: Bridge, user: MatrixTestClient) -> UserLogin:
    (login,) = bridge.logins_of(user.user_id)
    return login


async def sign_in_link(bridge: Bridge, user: MatrixTestClient, room: str, address: str) -> str:
    await user.send_text(room, "login")
    await wait_notice(user, room, bridge.bot_mxid, "Email address")
    await user.send_text(room, address)
    notice = (await wait_notice(user, room, bridge.bot_mxid, "Sign in with Rig Mail"))[-1]
    found = LINK.search(notice)
    assert found, notice
    return found.group(1)


async def approve(link: str, address: str) -> str:
    """The browser at the provider: sign in as `address`, approve; returns where it is sent."""
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": aiohttp.encode_basic_auth(address, "browser-session")}
        async with http.get(link, headers=auth, allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            return resp.headers["Location"]


async def open_page(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            return resp.status, await resp.text()


async def test_sign_in_through_the_callback_then_mail_flows_both_ways(
    callback_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str],
) -> None:
    address = mailbox[0]
    user = await matrix_user()
    room = await management_room(callback_bridge, user)
    link = await sign_in_link(callback_bridge, user, room, address)
    redirect = await approve(link, address)
    assert redirect.startswith(f"{callback_bridge.public_web.public_url}/oauth/callback?")
    status, page = await open_page(redirect)
    assert status == 200 and f"Logged in as {address}" in page
    await wait_notice(user, room, callback_bridge.bot_mxid, f"Logged in as {address}")

    bob = mail_stack.address("bob")
    original = mail(bob, [address], "Signed in with OAuth", "Hello over a bearer token")
    mail_stack.deliver(original.as_bytes(), [address], bob)
    dm = await user.wait_for_room_invite(timeout=20)
    await user.join(dm)
    await user.wait_for_event(dm, by_body("Hello over a bearer token"), timeout=20)
    await user.send_text(dm, "Answered through XOAUTH2 or OAUTHBEARER")
    got = await wait_for_mail(mail_stack, bob, with_subject("Re: Signed in with OAuth"))
    assert "Answered through" in str(got.message.get_body(("plain",)).get_content())


async def test_sign_in_by_pasting_the_redirect_address(
    paste_bridge: Bridge, matrix_user: MakeUser, mailbox: tuple[str, str],
) -> None:
    address = mailbox[0]
    user = await matrix_user()
    room = await management_room(paste_bridge, user)
    link = await sign_in_link(paste_bridge, user, room, address)
    redirect = await approve(link, address)
    assert redirect.startswith("http://localhost/?")  # the provider's paste redirect: nothing loads
    await user.send_text(room, redirect)
    await wait_notice(user, room, paste_bridge.bot_mxid, f"Logged in as {address}", timeout=30)
    login = only_login(paste_bridge, user)
    await user.wait_for(lambda: login.state.value == "CONNECTED")


async def test_tokens_are_stored_sealed_and_no_password(
    paste_bridge: Bridge, matrix_user: MakeUser, mailbox: tuple[str, str],
) -> None:
    address = mailbox[0]
    user = await matrix_user()
    room = await management_room(paste_bridge, user)
    redirect = await approve(await sign_in_link(paste_bridge, user, room, address), address)
    await user.send_text(room, redirect)
    await wait_notice(user, room, paste_bridge.bot_mxid, f"Logged in as {address}", timeout=30)
    (row,) = await paste_bridge.logins_table.for_user(user.user_id)
    assert "password" not in row.metadata
    client = only_login(paste_bridge, user).client
    access = await client.bearer.access_token()  # type: ignore[union-attr]
    stored = repr(row.metadata)
    assert access not in stored and client.bearer.tokens.refresh_token not in stored  # type: ignore[union-attr]
    assert row.metadata["oauth"]["provider"] == "rig"


async def test_a_sign_in_link_answers_once(
    callback_bridge: Bridge, matrix_user: MakeUser, mailbox: tuple[str, str],
) -> None:
    address = mailbox[0]
    user = await matrix_user()
    room = await management_room(callback_bridge, user)
    redirect = await approve(await sign_in_link(callback_bridge, user, room, address), address)
    assert (await open_page(redirect))[0] == 200
    status, page = await open_page(redirect)  # replayed: the state was used
    assert status == 400 and "already used or has expired" in page


async def test_an_answer_for_another_sign_in_is_refused(
    paste_bridge: Bridge, matrix_user: MakeUser, mailbox: tuple[str, str],
) -> None:
    address = mailbox[0]
    user = await matrix_user()
    room = await management_room(paste_bridge, user)
    await sign_in_link(paste_bridge, user, room, address)
    forged = "http://localhost/?code=stolen-code&state=not-this-attempts-state"
    await user.send_text(room, forged)
    await wait_notice(user, room, paste_bridge.bot_mxid, "belongs to another or an expired sign-in")
    assert await paste_bridge.logins_table.for_user(user.user_id) == []


@pytest.fixture
def short_tokens(mail_stack: MailStack) -> Iterator[OAuthIssuer]:
    """Access tokens that expire 4 s after they are issued (renewed from 3 s on)."""
    mail_stack.issuer.set_token_lifetime(4)
    yield mail_stack.issuer
    mail_stack.issuer.set_token_lifetime(3600)


async def signed_in(bridge: Bridge, user: MatrixTestClient, address: str, *, callback: bool) -> str:
    """Log in through the bot (callback or paste path); returns the management room."""
    room = await management_room(bridge, user)
    redirect = await approve(await sign_in_link(bridge, user, room, address), address)
    if callback:
        await open_page(redirect)
    else:
        await user.send_text(room, redirect)
    await wait_notice(user, room, bridge.bot_mxid, f"Logged in as {address}", timeout=30)
    login = only_login(bridge, user)
    await user.wait_for(lambda: login.state.value == "CONNECTED")
    return room


async def first_mail_room(user: MatrixTestClient, stack: MailStack, address: str, text: str) -> str:
    bob = stack.address("bob")
    stack.deliver(mail(bob, [address], "Renewal", text).as_bytes(), [address], bob)
    dm = await user.wait_for_room_invite(timeout=20)
    await user.join(dm)
    await user.wait_for_event(dm, by_body(text), timeout=20)
    return dm


async def test_a_token_expiring_mid_session_is_renewed_without_a_gap(
    paste_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    short_tokens: OAuthIssuer, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    address = mailbox[0]
    user = await matrix_user()
    room = await signed_in(paste_bridge, user, address, callback=False)
    renewed = short_tokens.refreshes()
    # two renewals in the background: the token of the login has long expired
    await user.wait_for(lambda: short_tokens.refreshes() >= renewed + 2, timeout=20)

    dm = await first_mail_room(user, mail_stack, address, "Arrived after the first token expired")
    await user.send_text(dm, "Sent with a renewed token")
    got = await wait_for_mail(mail_stack, mail_stack.address("bob"), with_subject("Re: Renewal"))
    assert "renewed token" in str(got.message.get_body(("plain",)).get_content())
    said = notices(user, room, paste_bridge.bot_mxid)
    assert not [n for n in said if address in n and any(t in n for t in TROUBLE)], said
    tokens = only_login(paste_bridge, user).client.bearer.tokens  # type: ignore[union-attr]
    assert tokens.access_token not in caplog.text and tokens.refresh_token not in caplog.text


async def test_a_revoked_sign_in_is_reported_with_a_new_link_that_restores_the_mailbox(
    callback_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], short_tokens: OAuthIssuer,
) -> None:
    address = mailbox[0]
    user = await matrix_user()
    room = await signed_in(callback_bridge, user, address, callback=True)
    refused = short_tokens.refused_refreshes()
    short_tokens.revoke(address)

    notice = (await wait_notice(user, room, callback_bridge.bot_mxid, "Sign in again:", timeout=20))[-1]
    assert "refused the credentials" in notice and "Rig Mail no longer accepts" in notice, notice
    login = only_login(callback_bridge, user)
    assert login.state.value == "BAD_CREDENTIALS"
    link = AGAIN.search(notice)
    assert link, notice
    status, page = await open_page(await approve(link.group(1), address))
    assert status == 200 and f"Signed in again as {address}" in page
    await user.wait_for(lambda: login.state.value == "CONNECTED")
    await first_mail_room(user, mail_stack, address, "Back after signing in again")
    # the refused refresh was not retried: only signing in again helped
    assert short_tokens.refused_refreshes() == refused + 1


@pytest.fixture
async def provisioned_callback_bridge(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, mail_stack: MailStack,
    tmp_path: Path,
) -> AsyncIterator[tuple[Bridge, str]]:
    """`callback_bridge` with the provisioning API on: (bridge, the API's base URL)."""
    path = oauth_config(bridge_setups, synapse, db_url, mail_stack, tmp_path, public=True)
    config = Config.load(path, example_for(load_connector("email")))
    port = free_port()
    config["provisioning.enabled"] = True
    config["provisioning.port"] = port
    config["provisioning.shared_secret"] = PROVISIONING_SECRET
    config.save()
    bridge = await start_bridge(path, connector_name="email")
    yield bridge, f"http://127.0.0.1:{port}/_matrix/provision/v3"
    await bridge.stop()


async def test_a_provisioning_client_waits_for_the_oauth_callback(
    provisioned_callback_bridge: tuple[Bridge, str], matrix_user: MakeUser,
    mailbox: tuple[str, str],
) -> None:
    bridge, api = provisioned_callback_bridge
    address, user = mailbox[0], await matrix_user()
    auth = {"Authorization": f"Bearer {PROVISIONING_SECRET}"}
    params = {"user_id": user.user_id}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.post(f"{api}/login/start/default", params=params) as resp:
            first = await resp.json()
        step_url = f"{api}/login/step/{first['login_id']}"
        async with http.post(f"{step_url}/{first['step_id']}/user_input", params=params,
                             json={"address": address}) as resp:
            oauth_step = await resp.json()
        assert oauth_step["external"] is True, oauth_step
        link = LINK.search(oauth_step["instructions"])
        assert link, oauth_step
        waiting = asyncio.create_task(http.post(
            f"{step_url}/{oauth_step['step_id']}/display_and_wait", params=params))
        status, page = await open_page(await approve(link.group(1), address))
        assert status == 200 and f"Logged in as {address}" in page
        async with await waiting as resp:
            done = await resp.json()
    assert resp.status == 200 and done["type"] == "complete", done
    assert [lg.id for lg in bridge.logins_of(user.user_id)] == [done["complete"]["user_login_id"]]


async def test_mail_after_a_token_renewal_goes_on_a_new_smtp_session(
    paste_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    short_tokens: OAuthIssuer,
) -> None:
    """The kept SMTP session logged in with the old token: a renewed token logs in anew."""
    address, bob = mailbox[0], mail_stack.address("bob")
    user = await matrix_user()
    await signed_in(paste_bridge, user, address, callback=False)
    dm = await first_mail_room(user, mail_stack, address, "One mail per token")
    first = await user.send_text(dm, "with the first token")
    await wait_for_mail(mail_stack, bob, for_event(first))
    renewed = short_tokens.refreshes()
    await user.wait_for(lambda: short_tokens.refreshes() > renewed, timeout=20)
    second = await user.send_text(dm, "with the renewed token")
    await wait_for_mail(mail_stack, bob, for_event(second))
    one, two = await wait_submissions(mail_stack, address, 2)
    assert one.port != two.port
