"""The bridge's perimeter against the real Synapse (loopback connector, both backends): invites
never create ghost accounts, the appservice API answers credentials and malformed bodies as the
spec says, and a flood of bad tokens does not flood the log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote
import uuid

import aiohttp
import pytest

from bridge.core.bridge import Bridge
from devstack.bot_flows import management_room, notices, wait_notice
from devstack.matrix_client import MatrixTestClient
from devstack.stack import Synapse
from tests.helpers.harness import start_bridge
from tests.test_core_e2e import log_in

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
APP = "/_matrix/app/v1"


async def registered(synapse: Synapse, user: MatrixTestClient, mxid: str) -> bool:
    async with user.session.get(f"{synapse.hs_url}/_matrix/client/v3/profile/{quote(mxid)}",
                                headers={"Authorization": f"Bearer {user.token}"}) as resp:
        return resp.status == 200


async def handled(bridge: Bridge, room: str, user: MatrixTestClient) -> None:
    """Wait until the bridge has stored an event of `room` and handled everything stored."""
    for _ in range(300):
        if await bridge.db.fetchval("SELECT COUNT(*) FROM matrix_event_inbox WHERE room_id=$1", room):
            await bridge.processor.drain()
            return
        await user.sync_once(timeout_ms=50)
    raise TimeoutError(f"nothing of {room} reached the bridge")


async def test_invite_of_an_unknown_ghost_registers_no_account(
    bridge: Bridge, matrix_user: MakeUser, synapse: Synapse,
) -> None:
    user = await matrix_user()
    management = await management_room(bridge, user)
    ghost = bridge.ghosts.mxid(f"nobody{uuid.uuid4().hex[:8]}")
    room = (await user.request("POST", "/createRoom", {"invite": [ghost]}))["room_id"]
    await handled(bridge, room, user)
    assert not await registered(synapse, user, ghost)
    await wait_notice(user, management, bridge.bot_mxid, f"You invited {ghost}")


async def test_invite_of_a_ghost_by_a_user_without_permission_is_ignored(
    bridge: Bridge, matrix_user: MakeUser, synapse: Synapse,
) -> None:
    user = await matrix_user("stranger")
    bridge.permissions[user.user_id] = "relay"  # may talk to the bot, not use the bridge
    ghost = bridge.ghosts.mxid(f"target{uuid.uuid4().hex[:8]}")
    room = (await user.request("POST", "/createRoom", {"invite": [ghost]}))["room_id"]
    await handled(bridge, room, user)
    assert not await registered(synapse, user, ghost)


async def request(bridge: Bridge, method: str, path: str, *, token: str | None,
                  body: Any = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = str(bridge.config["appservice.address"]).rstrip("/") + APP + path
    async with aiohttp.ClientSession() as http, http.request(
            method, url, headers=headers, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_missing_token_is_401_and_wrong_token_403(bridge: Bridge) -> None:
    status, answer = await request(bridge, "POST", "/ping", token=None, body={})
    assert (status, answer["errcode"]) == (401, "M_UNAUTHORIZED")
    status, answer = await request(bridge, "POST", "/ping", token="not-it", body={})
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")


@pytest.mark.parametrize("body", [
    {"events": 5},
    {"events": "abc"},
    {"events": [{"event_id": "$a", "room_id": {"not": "a string"}, "type": "m.room.message"}]},
    {"events": [{"room_id": "!r:localhost", "type": "m.room.message"}]},
    {"events": [{"event_id": "$b", "room_id": "!r:localhost", "content": "text"}]},
    {"ephemeral": 7},
    [1, 2],
])
async def test_malformed_transaction_with_a_valid_token_is_400(bridge: Bridge, body: Any) -> None:
    token = str(bridge.config["appservice.hs_token"])
    status, answer = await request(bridge, "PUT", f"/transactions/bad-{uuid.uuid4().hex}",
                                   token=token, body=body)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON"), answer
    assert await bridge.db.fetchval("SELECT COUNT(*) FROM matrix_event_inbox WHERE event_id LIKE '$%'"
                                    " AND room_id='!r:localhost'") == 0


async def test_a_flood_of_bad_tokens_is_logged_in_a_few_lines(
    bridge: Bridge, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="letterbox.intake")
    for _ in range(50):
        assert (await request(bridge, "POST", "/ping", token="guess", body={}))[0] == 403
    lines = [r for r in caplog.records if "Refused request" in r.getMessage()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
    assert bridge.intake.refused >= 50


async def test_an_unexpected_error_is_never_echoed_into_a_room(
    bridge_config: Path, matrix_user: MakeUser,
) -> None:
    user = await matrix_user()
    bridge = await start_bridge(bridge_config)
    try:
        room = await management_room(bridge, user)
        await log_in(bridge, user, room, "damaged")
        [row] = await bridge.logins_table.for_user(user.user_id)
        # A stored secret that cannot be opened (a fault no server produces): its error text
        # names an internal detail.
        row.metadata["password"] = "v1:vault.internal.example:AAAA"
        await bridge.logins_table.update(row)
    finally:
        await bridge.stop()
    bridge = await start_bridge(bridge_config)
    try:
        said = await wait_notice(user, room, bridge.bot_mxid, "an internal error")
        assert not [n for n in notices(user, room, bridge.bot_mxid) if "vault.internal" in n], said
    finally:
        await bridge.stop()
