"""Metrics and health checks over HTTP, against a running bridge on a real Synapse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
import shutil
import time
import uuid

import aiohttp
import pytest

from bridge.__main__ import example_for
from bridge.connectors import load_connector
from bridge.core.bridge import Bridge
from bridge.core.config import Config
from devstack.bot_flows import management_room, wait_notice
from devstack.matrix_client import MatrixTestClient
from devstack.ports import free_port
from devstack.stack import MailStack
from tests.helpers.email_e2e import by_body, logged_in, mail, wait_for_mail, with_subject
from tests.helpers.harness import LOOPBACK, start_bridge
from tests.test_core_e2e import log_in

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


@pytest.fixture
async def measured(bridge_config: Path, tmp_path: Path) -> AsyncIterator[tuple[Bridge, str]]:
    path = tmp_path / "measured.yaml"
    shutil.copy(bridge_config, path)
    config = Config.load(path, example_for(load_connector(LOOPBACK)))
    port = free_port()
    config["metrics.enabled"] = True
    config["metrics.port"] = port
    config.save()
    bridge = await start_bridge(path)
    try:
        yield bridge, f"http://127.0.0.1:{port}"
    finally:
        await bridge.stop()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


async def test_live_and_ready_once_started(measured: tuple[Bridge, str]) -> None:
    _, base = measured
    assert await get(base + "/health/live") == (200, '{"live": true}')
    assert await get(base + "/health/ready") == (200, '{"ready": true}')


async def test_metrics_count_events_and_logins_by_state(
    measured: tuple[Bridge, str], matrix_user: MakeUser
) -> None:
    bridge, base = measured
    user = await matrix_user()
    room = await management_room(bridge, user)
    await user.send_text(room, "ping")
    await wait_notice(user, room, bridge.bot_mxid, "Pong")
    client = await log_in(bridge, user, room, "counted")
    await user.wait_for(lambda: all(lg.state.value == "CONNECTED" for lg in bridge.logins.values()))
    await client.receive("mona", "hello metrics")
    await user.wait_for_room_invite()
    status, text = await get(base + "/metrics")
    assert status == 200
    assert (sample(text, 'letterbox_matrix_events_total{type="m.room.message"}') or 0) >= 4
    assert sample(text, 'letterbox_remote_events_total{type="RemoteMessage"}') == 1
    assert sample(text, 'letterbox_logins{state="CONNECTED"}') == 1
    assert sample(text, 'letterbox_logins{state="BAD_CREDENTIALS"}') == 0
    assert (sample(text, 'letterbox_remote_event_seconds_count{type="RemoteMessage"}')) == 1


async def wait_for_samples(url: str, wanted: dict[str, float], timeout: float = 20.0) -> str:
    """Scrape until every sample has its value (the metrics are read from the bridge's state)."""
    deadline = time.monotonic() + timeout
    while True:
        status, text = await get(url)
        if status == 200 and all(sample(text, k) == v for k, v in wanted.items()):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{wanted} not reached; last scrape:\n{text}")
        await asyncio.sleep(0.2)


async def test_email_outbox_depth_is_exported_by_state(
    email_config: Path, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
) -> None:
    config = Config.load(email_config, example_for(load_connector("email")))
    port = free_port()
    config["metrics.enabled"] = True
    config["metrics.port"] = port
    config.save()
    bridge = await start_bridge(email_config, connector_name="email")
    me, user = mailbox[0], await matrix_user()
    friend = mail_stack.add_user(f"f{uuid.uuid4().hex[:10]}", "friend-pass")
    await logged_in(bridge, user, mail_stack, mailbox)
    mail_stack.deliver(mail(friend, [me], "Depth", "count me").as_bytes(), [me], friend)
    dm = await user.wait_for_room_invite(timeout=20)
    await user.join(dm)
    await user.wait_for_event(dm, by_body("count me"))
    await user.send_text(dm, "an answer")
    await wait_for_mail(mail_stack, friend, with_subject("Re: Depth"))
    text = await wait_for_samples(f"http://127.0.0.1:{port}/metrics", {
        'letterbox_email_outbox_mails{state="sent"}': 1,
        'letterbox_email_sent_copies_pending': 0,
    })
    for state in ("queued", "sending", "failed"):
        assert sample(text, f'letterbox_email_outbox_mails{{state="{state}"}}') == 0
    await bridge.stop()
