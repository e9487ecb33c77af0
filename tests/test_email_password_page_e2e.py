"""A password given on the bridge's one-time web page never enters Matrix."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
import json
from pathlib import Path
import re

import aiohttp
import pytest

from bridge.core.bridge import Bridge
from devstack.bot_flows import management_room, wait_notice
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack, Synapse
from tests.helpers.harness import BridgeSetup, start_bridge

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
PAGE = re.compile(r"never passes through Matrix: (\S+) ")
CSRF = re.compile(r"name=csrf value='([^']+)'")


@pytest.fixture
async def paged_bridge(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str,
                       mail_stack: MailStack, tmp_path: Path) -> AsyncIterator[Bridge]:
    setup = bridge_setups["email"]
    config = setup.config_for(tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
                              network={"ca_file": str(mail_stack.ca_file)},
                              core={"bridge.public_url": setup.public_url})
    bridge = await start_bridge(config, connector_name="email")
    yield bridge
    await bridge.stop()


async def page_link(bridge: Bridge, user: MatrixTestClient, room: str, address: str) -> str:
    await user.send_text(room, "login")
    await wait_notice(user, room, bridge.bot_mxid, "Email address")
    await user.send_text(room, address)
    notice = (await wait_notice(user, room, bridge.bot_mxid, "never passes through Matrix"))[-1]
    found = PAGE.search(notice)
    assert found, notice
    return found.group(1)


async def open_form(http: aiohttp.ClientSession, link: str) -> dict[str, str]:
    async with http.get(link) as resp:
        assert resp.status == 200
        text = await resp.text()
    csrf = CSRF.search(text)
    assert csrf, text
    return {"t": link.rsplit("t=", 1)[1], "csrf": csrf.group(1)}


async def post(http: aiohttp.ClientSession, link: str, form: dict[str, str],
               headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with http.post(link.split("?")[0], data=form, headers=headers or {}) as resp:
        return resp.status, await resp.text()


async def test_a_password_given_on_the_web_page_logs_in_and_never_enters_matrix(
    paged_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
) -> None:
    address, password = mailbox
    user = await matrix_user()
    room = await management_room(paged_bridge, user)
    link = await page_link(paged_bridge, user, room, address)
    async with aiohttp.ClientSession() as http:
        form = await open_form(http, link)
        status, text = await post(http, link, {**form, "password": password})
    assert status == 200 and "checking your mailbox" in text
    await wait_notice(user, room, paged_bridge.bot_mxid, "IMAP server")
    await user.send_text(room, f"127.0.0.1:{mail_stack.imap_port}:starttls")
    await wait_notice(user, room, paged_bridge.bot_mxid, "SMTP server")
    await user.send_text(room, f"127.0.0.1:{mail_stack.submission_port}:starttls")
    await wait_notice(user, room, paged_bridge.bot_mxid, "Your name")
    await user.send_text(room, "-")
    await wait_notice(user, room, paged_bridge.bot_mxid, f"Logged in as {address}", timeout=30)
    assert password not in json.dumps(user.timeline.get(room, []))


async def test_the_page_takes_one_answer(
    paged_bridge: Bridge, matrix_user: MakeUser, mailbox: tuple[str, str],
) -> None:
    address, password = mailbox
    user = await matrix_user()
    room = await management_room(paged_bridge, user)
    link = await page_link(paged_bridge, user, room, address)
    async with aiohttp.ClientSession() as http:
        form = await open_form(http, link)
        assert (await post(http, link, {**form, "password": password}))[0] == 200
        status, text = await post(http, link, {**form, "password": "a second try"})
        assert status == 410 and "already used or has expired" in text
        async with http.get(link) as resp:
            assert resp.status == 410


async def test_the_page_refuses_a_form_without_its_csrf_token(
    paged_bridge: Bridge, matrix_user: MakeUser, mailbox: tuple[str, str],
) -> None:
    address, password = mailbox
    user = await matrix_user()
    room = await management_room(paged_bridge, user)
    link = await page_link(paged_bridge, user, room, address)
    async with aiohttp.ClientSession() as http:
        form = await open_form(http, link)
        forged = {**form, "csrf": "guessed", "password": "attacker's"}
        assert (await post(http, link, forged))[0] == 403
        other_site = {"Origin": "https://evil.example"}
        assert (await post(http, link, {**form, "password": "x"}, other_site))[0] == 403
        # neither counted as the answer: the real form still works
        assert (await post(http, link, {**form, "password": password}))[0] == 200
    await wait_notice(user, room, paged_bridge.bot_mxid, "IMAP server")
