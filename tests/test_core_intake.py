"""The appservice intake against the real Synapse, on both database backends.

Synapse really pings the bridge; everything else plays the homeserver only by sending the
bridge the HTTP requests Synapse sends (transactions, retries), into a real management room.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
import sqlite3
import time
from typing import Any
from urllib.parse import quote
import uuid

import aiohttp
import asyncpg
import pytest
from mautrix.api import Method, Path as ApiPath
from ruamel.yaml import YAML
from yarl import URL

from bridge.core.bridge import Bridge
from devstack.postgres import PostgresServer
from tests.helpers.flows import management_room, notices, wait_notice
from tests.helpers.harness import BridgeSetup, start_bridge
from tests.helpers.matrix_client import MatrixTestClient

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
APP_PREFIX = "/_matrix/app/v1"
PONG = "Pong!"
VERSION_REPLY = "Letterbox "
# SQLite waits this long for a lock during the outage test (mautrix's default is 5000 ms).
SQLITE_TEST_BUSY_TIMEOUT_MS = 300


class Homeserver:
    """The test's stand-in for Synapse's side of the appservice API."""

    def __init__(self, session: aiohttp.ClientSession, bridge: Bridge) -> None:
        self.session = session
        self.address = str(bridge.config["appservice.address"]).rstrip("/")
        self.hs_token = str(bridge.config["appservice.hs_token"])

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.hs_token}"}

    async def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                      params: dict[str, str] | None = None, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(
            method, self.address + APP_PREFIX + path, headers=self.auth if headers is None else headers,
            params=params, json=body,
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def put_transaction(self, txn_id: str, events: list[dict[str, Any]], **kw: Any) -> tuple[int, Any]:
        return await self.request("PUT", f"/transactions/{quote(txn_id, safe='')}", body={"events": events}, **kw)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@asynccontextmanager
async def running(config: Path) -> AsyncIterator[Bridge]:
    """A bridge started on `config`; stopping it is part of what the test checks."""
    bridge = await start_bridge(config)
    try:
        yield bridge
    finally:
        await bridge.stop()


def new_txn_id() -> str:
    return f"test-{uuid.uuid4().hex}"


def message_event(room_id: str, sender: str, body: str) -> dict[str, Any]:
    """An m.room.message as Synapse would push it (with a synthetic event ID)."""
    return {
        "type": "m.room.message",
        "event_id": f"$test-{uuid.uuid4().hex}",
        "room_id": room_id,
        "sender": sender,
        "origin_server_ts": int(time.time() * 1000),
        "content": {"msgtype": "m.text", "body": body},
        "unsigned": {"age": 0},
    }


def count_replies(user: MatrixTestClient, room: str, bot: str, prefix: str) -> int:
    return sum(1 for n in notices(user, room, bot) if n.startswith(prefix))


async def assert_one_pong(hs: Homeserver, bridge: Bridge, user: MatrixTestClient, room: str) -> None:
    """A `version` command pushed behind everything else; a room's events are handled in
    order, so a second Pong would be in the timeline before the version reply."""
    versions = count_replies(user, room, bridge.bot_mxid, VERSION_REPLY)
    assert await hs.put_transaction(new_txn_id(), [message_event(room, user.user_id, "version")]) == (200, {})
    await wait_notice(user, room, bridge.bot_mxid, VERSION_REPLY, count=versions + 1)
    await bridge.processor.drain()
    await user.sync_once(timeout_ms=300)
    assert count_replies(user, room, bridge.bot_mxid, PONG) == 1, notices(user, room, bridge.bot_mxid)


async def inbox_rows(bridge: Bridge, event_id: str) -> list[bool]:
    rows = await bridge.db.fetch("SELECT done FROM matrix_event_inbox WHERE event_id=$1", event_id)
    return [bool(r["done"]) for r in rows]


async def stored_txn_ids(bridge: Bridge) -> set[str]:
    return {r["txn_id"] for r in await bridge.db.fetch("SELECT txn_id FROM as_transaction")}


async def wait_replies_pushed(bridge: Bridge, user: MatrixTestClient, room: str) -> None:
    """Wait until Synapse has pushed the bot's own messages back to the bridge, so it has
    nothing to retry (with back-off) while the bridge is stopped."""
    ids = [e["event_id"] for e in user.messages(room, bridge.bot_mxid)]
    deadline = time.monotonic() + 10
    while True:
        stored = {r["event_id"] for r in await bridge.db.fetch("SELECT event_id FROM matrix_event_inbox")}
        if set(ids) <= stored:
            return
        assert time.monotonic() < deadline, f"Synapse did not push {set(ids) - stored}"
        await user.sync_once(timeout_ms=100)


# ---------------------------------------------------------------- 1. registration and ping

async def test_synapse_uses_the_generated_registration_and_pings_the_bridge(
    bridge: Bridge, bridge_setups: dict[str, BridgeSetup]
) -> None:
    registration = YAML(typ="safe").load(bridge_setups["loopback"].registration.read_text())
    assert registration["as_token"] == bridge.config["appservice.as_token"]
    assert registration["hs_token"] == bridge.config["appservice.hs_token"]
    assert registration["url"] == bridge.config["appservice.address"]

    before = bridge.intake.pings
    # Synapse checks the as_token, then calls POST /_matrix/app/v1/ping on the bridge with the hs_token.
    answer = await bridge.bot.api.request(
        Method.POST, ApiPath.v1.appservice[registration["id"]].ping, content={"transaction_id": new_txn_id()}
    )
    assert isinstance(answer.get("duration_ms"), int), answer
    assert bridge.intake.pings == before + 1


# ---------------------------------------------------------------- 2. authentication

async def test_wrong_missing_or_query_only_tokens_get_403_and_change_nothing(
    bridge: Bridge, http: aiohttp.ClientSession
) -> None:
    hs = Homeserver(http, bridge)
    refused = {
        "wrong token": ({"Authorization": "Bearer not-the-hs-token"}, None),
        "as_token instead": ({"Authorization": f"Bearer {bridge.config['appservice.as_token']}"}, None),
        "not Bearer": ({"Authorization": f"Basic {hs.hs_token}"}, None),
        "no header": ({}, None),
        "query only": ({}, {"access_token": hs.hs_token}),
    }
    event = message_event("!nowhere:localhost", "@someone:localhost", "ping")
    txn_ids = []
    pings = bridge.intake.pings
    for case, (headers, params) in refused.items():
        txn_ids.append(new_txn_id())
        requests = [
            ("PUT", f"/transactions/{txn_ids[-1]}", {"events": [event]}),
            ("POST", "/ping", {"transaction_id": "t1"}),
            ("GET", "/users/" + quote("@loop_someone:localhost", safe="@:"), None),
            ("GET", "/rooms/" + quote("#loop_someone:localhost", safe=":"), None),
        ]
        for method, path, body in requests:
            status, answer = await hs.request(method, path, headers=headers, params=params, body=body)
            assert (status, answer.get("errcode")) == (403, "M_FORBIDDEN"), (case, method, path, answer)

    assert bridge.intake.pings == pings
    # Synapse may push its own (numbered) transactions meanwhile; none of ours got in.
    assert not set(txn_ids) & await stored_txn_ids(bridge)
    assert await inbox_rows(bridge, event["event_id"]) == []
    ours = await bridge.db.fetchval(
        "SELECT COUNT(*) FROM matrix_event_inbox WHERE event_id LIKE '$test-%' OR event_id LIKE '~%'")
    assert ours == 0

    # The same requests with the right token are accepted: the refusals were about the token.
    assert await hs.put_transaction(txn_ids[0], [event]) == (200, {})
    assert txn_ids[0] in await stored_txn_ids(bridge)
    assert len(await inbox_rows(bridge, event["event_id"])) == 1
    assert await hs.request("POST", "/ping", body={"transaction_id": "t2"}) == (200, {})
    assert bridge.intake.pings == pings + 1
    status, answer = await hs.request("GET", "/users/" + quote("@loop_someone:localhost", safe="@:"))
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")


# ---------------------------------------------------------------- 3. replays

async def test_replayed_transaction_is_processed_once_also_after_a_restart(
    bridge_config: Path, matrix_user: MakeUser, http: aiohttp.ClientSession
) -> None:
    user = await matrix_user()
    ping_txn = new_txn_id()
    async with running(bridge_config) as bridge:
        hs = Homeserver(http, bridge)
        room = await management_room(bridge, user)
        ping = message_event(room, user.user_id, "ping")
        assert await hs.put_transaction(ping_txn, [ping]) == (200, {})
        await wait_notice(user, room, bridge.bot_mxid, PONG)
        assert await hs.put_transaction(ping_txn, [ping]) == (200, {})
        await assert_one_pong(hs, bridge, user, room)
        await wait_replies_pushed(bridge, user, room)

    async with running(bridge_config) as bridge:
        hs = Homeserver(http, bridge)
        assert await hs.put_transaction(ping_txn, [ping]) == (200, {})
        other_txn = new_txn_id()  # the same event in a transaction the bridge has not seen
        assert await hs.put_transaction(other_txn, [ping]) == (200, {})
        await assert_one_pong(hs, bridge, user, room)
        assert {ping_txn, other_txn} <= await stored_txn_ids(bridge)
        assert await inbox_rows(bridge, ping["event_id"]) == [True]
        # Nothing late: a few more seconds of syncing bring no second Pong.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            await user.sync_once(timeout_ms=500)
        assert count_replies(user, room, bridge.bot_mxid, PONG) == 1


# ---------------------------------------------------------------- 4. database outage

@asynccontextmanager
async def database_unavailable(bridge: Bridge, db_url: str, request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Make the bridge's database refuse work for real, and bring it back afterwards."""
    if db_url.startswith("sqlite:"):
        # The bridge's only SQLite connection waits for locks SQLITE_TEST_BUSY_TIMEOUT_MS.
        await bridge.db.execute(f"PRAGMA busy_timeout = {SQLITE_TEST_BUSY_TIMEOUT_MS}")
        locker = sqlite3.connect(db_url.removeprefix("sqlite:"), isolation_level=None, timeout=10)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # no other connection can write until ROLLBACK
            yield
            locker.execute("ROLLBACK")
        finally:
            locker.close()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = URL(db_url).path.lstrip("/")
    admin = await asyncpg.connect(server.dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        killed = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname=$1", name)
        assert killed, "the bridge had no open connection to cut"
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_database_outage_answers_503_then_processes_the_retry_once(
    bridge_config: Path, db_url: str, matrix_user: MakeUser, http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    user = await matrix_user()
    async with running(bridge_config) as bridge:
        hs = Homeserver(http, bridge)
        room = await management_room(bridge, user)
        ping = message_event(room, user.user_id, "ping")
        txn = new_txn_id()
        async with database_unavailable(bridge, db_url, request):
            status, answer = await hs.put_transaction(txn, [ping])
            assert status == 503 and answer["errcode"] == "M_UNKNOWN", (status, answer)
        assert txn not in await stored_txn_ids(bridge)
        assert await inbox_rows(bridge, ping["event_id"]) == []

        # Synapse retries the same transaction once the bridge answers again.
        assert await hs.put_transaction(txn, [ping]) == (200, {})
        await wait_notice(user, room, bridge.bot_mxid, PONG)
        await assert_one_pong(hs, bridge, user, room)
        assert await inbox_rows(bridge, ping["event_id"]) == [True]
        # Still reachable for Synapse after the outage.
        before = bridge.intake.pings
        await bridge.bot.appservice_ping(str(bridge.config["appservice.id"]))
        assert bridge.intake.pings == before + 1
        await wait_replies_pushed(bridge, user, room)
    # running() stopped the bridge: stop() works after the outage.
