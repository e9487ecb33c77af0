"""A message answering a secret prompt is scrubbed before it is stored; its text lives in memory
only, so after a restart the user is asked again (loopback connector, real Synapse, both backends)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bridge.core.bridge import Bridge
from devstack.bot_flows import management_room, wait_notice
from devstack.matrix_client import MatrixTestClient
from tests.helpers.db_dump import dump_database
from tests.helpers.harness import start_bridge
from tests.helpers.loopback_connector import PASSWORD

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


async def stored(bridge: Bridge, event_id: str) -> bool:
    return await bridge.db.fetchval(
        "SELECT COUNT(*) FROM matrix_event_inbox WHERE event_id=$1", event_id) == 1


async def test_secret_answer_stored_before_a_restart_is_asked_again_never_kept(
    bridge_config: Path, db_url: str, matrix_user: MakeUser,
) -> None:
    user = await matrix_user()
    bridge = await start_bridge(bridge_config)
    try:
        room = await management_room(bridge, user)
        await user.send_text(room, "login")
        await wait_notice(user, room, bridge.bot_mxid, "Username")
        await user.send_text(room, "tester")
        await wait_notice(user, room, bridge.bot_mxid, "Password")
        # The bridge stops handling events; the answer is stored but not yet handled.
        await bridge.processor.stop()
        secret = await user.send_text(room, PASSWORD)
        await wait_until_stored(bridge, user, secret)
    finally:
        await bridge.stop()
    assert PASSWORD.encode() not in await dump_database(db_url)

    bridge = await start_bridge(bridge_config)
    try:
        await wait_notice(user, room, bridge.bot_mxid, "it was not kept")
        event = await user.request("GET", f"/rooms/{room}/event/{secret}")
        assert event["content"] == {}, event  # removed from the room as well
        assert not bridge.logins
    finally:
        await bridge.stop()
    assert PASSWORD.encode() not in await dump_database(db_url)


async def wait_until_stored(bridge: Bridge, user: MatrixTestClient, event_id: str) -> None:
    for _ in range(200):
        if await stored(bridge, event_id):
            return
        await user.sync_once(timeout_ms=50)
    raise TimeoutError(f"{event_id} was not pushed to the bridge")
