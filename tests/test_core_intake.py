"""The appservice intake against the real Synapse, on both database backends.

Synapse really pings the bridge; otherwise the test plays the homeserver only by sending the
bridge the HTTP requests Synapse sends (transactions and their retries) about events in a real
management room, and watches the bot's answers there as a real Matrix user.
"""

from __future__ import annotations

import asyncio
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
from mautrix.api import Method
from mautrix.api import Path as ApiPath
import pytest
from ruamel.yaml import YAML
from yarl import URL

from bridge.core.bridge import Bridge
from devstack.bot_flows import management_room, notices, wait_notice
from devstack.matrix_client import MatrixTestClient
from devstack.postgres import PostgresServer
from devstack.stack import Synapse
from tests.helpers.harness import BridgeSetup, start_bridge

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
APP_PREFIX = "/_matrix/app/v1"
PONG = "Pong!"
VERSION_REPLY = "Letterbox "
# How long the bridge's SQLite connection waits for a lock in the outage tests (set with a
# PRAGMA on that connection; mautrix's default of 5000 ms would make them slow).
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
        headers = self.auth if headers is None else headers
        url = self.address + APP_PREFIX + path
        async with self.session.request(method, url, headers=headers, params=params,
                                        json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def put_transaction(self, txn_id: str, events: list[dict[str, Any]],
                              **kw: Any) -> tuple[int, Any]:
        path = f"/transactions/{quote(txn_id, safe='')}"
        return await self.request("PUT", path, body={"events": events}, **kw)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def sqlite_bridge_config(bridge_setups: dict[str, BridgeSetup], synapse: Synapse,
                         tmp_path: Path) -> Path:
    return bridge_setups["loopback"].config_for(tmp_path.name, hs_url=synapse.hs_url,
                                                db_url=f"sqlite:{tmp_path / 'bridge.db'}")


@asynccontextmanager
async def running(config: Path) -> AsyncIterator[Bridge]:
    """A bridge started on `config`; its stop() runs inside the test, so a failure fails it."""
    bridge = await start_bridge(config)
    try:
        yield bridge
    finally:
        await bridge.stop()


def new_txn_id() -> str:
    return f"test-{uuid.uuid4().hex}"


def message_event(room_id: str, sender: str, body: str) -> dict[str, Any]:
    """An m.room.message as Synapse pushes it, with a synthetic event ID."""
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


async def assert_one_pong(hs: Homeserver, bridge: Bridge, user: MatrixTestClient,
                          room: str) -> None:
    """Push a `version` command behind everything sent so far: a room's events are handled
    in order, so a repeated Pong would reach the timeline before the version reply."""
    versions = count_replies(user, room, bridge.bot_mxid, VERSION_REPLY)
    marker = message_event(room, user.user_id, "version")
    assert await hs.put_transaction(new_txn_id(), [marker]) == (200, {})
    await wait_notice(user, room, bridge.bot_mxid, VERSION_REPLY, count=versions + 1)
    await bridge.processor.drain()
    await user.sync_once(timeout_ms=300)
    pongs = count_replies(user, room, bridge.bot_mxid, PONG)
    assert pongs == 1, notices(user, room, bridge.bot_mxid)


async def inbox_rows(bridge: Bridge, event_id: str) -> list[bool]:
    """The `done` flags of the inbox rows of `event_id`."""
    rows = await bridge.db.fetch("SELECT done FROM matrix_event_inbox WHERE event_id=$1", event_id)
    return [bool(r["done"]) for r in rows]


async def stored_txn_ids(bridge: Bridge) -> set[str]:
    return {r["txn_id"] for r in await bridge.db.fetch("SELECT txn_id FROM as_transaction")}


async def settle(bridge: Bridge, user: MatrixTestClient, room: str) -> None:
    """Wait until Synapse has pushed the bot's own messages back to the bridge and they are
    handled: Synapse then has nothing to retry (with back-off) while the bridge is away."""
    ids = {e["event_id"] for e in user.messages(room, bridge.bot_mxid)}
    deadline = time.monotonic() + 10
    while True:
        rows = await bridge.db.fetch("SELECT event_id FROM matrix_event_inbox")
        missing = ids - {r["event_id"] for r in rows}
        if not missing:
            break
        assert time.monotonic() < deadline, f"Synapse did not push {missing}"
        await user.sync_once(timeout_ms=100)
    await bridge.processor.drain()


async def lock_sqlite(path: str) -> sqlite3.Connection:
    """Hold SQLite's write lock from a second connection (until ROLLBACK or close).

    Tried without waiting, so a write of the bridge in progress (it runs on this event loop)
    is never blocked behind us."""
    locker = sqlite3.connect(path, isolation_level=None, timeout=0)
    deadline = time.monotonic() + 5
    while True:
        try:
            locker.execute("BEGIN EXCLUSIVE")
            return locker
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                locker.close()
                raise
            await asyncio.sleep(0.01)


# ---------------------------------------------------------------- 1. registration and ping

async def test_synapse_uses_the_generated_registration_and_pings_the_bridge(
    bridge: Bridge, bridge_setups: dict[str, BridgeSetup]
) -> None:
    registration = YAML(typ="safe").load(bridge_setups["loopback"].registration.read_text())
    assert registration["as_token"] == bridge.config["appservice.as_token"]
    assert registration["hs_token"] == bridge.config["appservice.hs_token"]
    assert registration["url"] == bridge.config["appservice.address"]

    before = bridge.intake.pings
    # Synapse checks our as_token, then POSTs /_matrix/app/v1/ping to the bridge with hs_token.
    answer = await bridge.bot.api.request(
        Method.POST, ApiPath.v1.appservice[registration["id"]].ping,
        content={"transaction_id": new_txn_id()},
    )
    assert isinstance(answer.get("duration_ms"), int), answer
    assert bridge.intake.pings == before + 1


# ---------------------------------------------------------------- 2. authentication

async def test_wrong_missing_or_query_only_tokens_are_refused_and_change_nothing(
    bridge: Bridge, http: aiohttp.ClientSession
) -> None:
    hs = Homeserver(http, bridge)
    as_token = bridge.config["appservice.as_token"]
    refused: dict[str, tuple[dict[str, str], dict[str, str] | None]] = {
        "wrong token": ({"Authorization": "Bearer not-the-hs-token"}, None),
        "as_token instead": ({"Authorization": f"Bearer {as_token}"}, None),
        "not Bearer": ({"Authorization": f"Basic {hs.hs_token}"}, None),
        "no header": ({}, None),
        "query only": ({}, {"access_token": hs.hs_token}),
    }
    user_path = "/users/" + quote("@loop_someone:localhost", safe="@:")
    room_path = "/rooms/" + quote("#loop_someone:localhost", safe=":")
    event = message_event("!nowhere:localhost", "@someone:localhost", "ping")
    txn_ids = []
    pings = bridge.intake.pings
    for case, (headers, params) in refused.items():
        txn_ids.append(new_txn_id())
        requests = [
            ("PUT", f"/transactions/{txn_ids[-1]}", {"events": [event]}),
            ("POST", "/ping", {"transaction_id": "t1"}),
            ("GET", user_path, None),
            ("GET", room_path, None),
        ]
        for method, path, body in requests:
            status, answer = await hs.request(method, path, headers=headers, params=params,
                                              body=body)
            expected = (401, "M_UNAUTHORIZED") if case == "no header" else (403, "M_FORBIDDEN")
            assert (status, answer.get("errcode")) == expected, (case, path, answer)

    assert bridge.intake.pings == pings
    # Only Synapse's own (numbered) transactions may have arrived meanwhile; none of ours.
    assert not set(txn_ids) & await stored_txn_ids(bridge)
    ours = await bridge.db.fetchval("SELECT COUNT(*) FROM matrix_event_inbox"
                                    " WHERE event_id LIKE '$test-%' OR event_id LIKE '~%'")
    assert ours == 0

    # The same requests with the right token are accepted: the refusals were about the token.
    assert await hs.put_transaction(txn_ids[0], [event]) == (200, {})
    assert txn_ids[0] in await stored_txn_ids(bridge)
    assert len(await inbox_rows(bridge, event["event_id"])) == 1
    assert await hs.request("POST", "/ping", body={"transaction_id": "t2"}) == (200, {})
    # Beside a valid header a query token is ignored (Synapse's legacy mode sends both).
    assert await hs.request("POST", "/ping", body={"transaction_id": "t3"},
                            params={"access_token": "anything"}) == (200, {})
    assert bridge.intake.pings == pings + 2
    status, answer = await hs.request("GET", user_path)
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
        await settle(bridge, user, room)

    async with running(bridge_config) as bridge:  # a new Bridge on the same database
        hs = Homeserver(http, bridge)
        assert await hs.put_transaction(ping_txn, [ping]) == (200, {})
        other_txn = new_txn_id()  # the same event in a transaction the bridge has not seen
        assert await hs.put_transaction(other_txn, [ping]) == (200, {})
        await assert_one_pong(hs, bridge, user, room)
        assert {ping_txn, other_txn} <= await stored_txn_ids(bridge)
        assert await inbox_rows(bridge, ping["event_id"]) == [True]
        # Nothing late either: two more seconds of syncing bring no second Pong.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            await user.sync_once(timeout_ms=500)
        assert count_replies(user, room, bridge.bot_mxid, PONG) == 1
        await settle(bridge, user, room)


# ---------------------------------------------------------------- 4. database outage

@asynccontextmanager
async def database_unavailable(bridge: Bridge, db_url: str,
                               request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Make the bridge's database refuse work for real, and bring it back afterwards.

    SQLite: another connection holds the write lock. PostgreSQL: the database refuses new
    connections and the bridge's sessions are terminated."""
    if db_url.startswith("sqlite:"):
        await bridge.db.execute(f"PRAGMA busy_timeout = {SQLITE_TEST_BUSY_TIMEOUT_MS}")
        locker = await lock_sqlite(db_url.removeprefix("sqlite:"))
        try:
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
        await settle(bridge, user, room)
        ping = message_event(room, user.user_id, "ping")
        txn = new_txn_id()
        async with database_unavailable(bridge, db_url, request):
            status, answer = await hs.put_transaction(txn, [ping])
            assert (status, answer["errcode"]) == (503, "M_UNKNOWN"), answer
        assert txn not in await stored_txn_ids(bridge)
        assert await inbox_rows(bridge, ping["event_id"]) == []

        # Synapse retries the same transaction; the bridge has reconnected and takes it.
        assert await hs.put_transaction(txn, [ping]) == (200, {})
        await wait_notice(user, room, bridge.bot_mxid, PONG)
        await assert_one_pong(hs, bridge, user, room)
        assert await inbox_rows(bridge, ping["event_id"]) == [True]
        # Synapse still reaches the bridge (the ping also makes it retry what failed meanwhile).
        before = bridge.intake.pings
        await bridge.bot.appservice_ping(str(bridge.config["appservice.id"]))
        assert bridge.intake.pings == before + 1
        await settle(bridge, user, room)
    # running() has stopped the bridge: stop() works after the outage.


async def test_database_lost_while_an_event_is_handled_does_not_handle_it_again(
    sqlite_bridge_config: Path, matrix_user: MakeUser, http: aiohttp.ClientSession
) -> None:
    """The event is stored, then the database refuses writes while the bot answers it: marking
    it handled fails, and it must not be answered again once the database works.

    SQLite only: the lock is taken on the bridge's own event loop right after the 200, before
    the bridge can have marked the event; cutting PostgreSQL from here would race with it."""
    user = await matrix_user()
    async with running(sqlite_bridge_config) as bridge:
        hs = Homeserver(http, bridge)
        room = await management_room(bridge, user)
        await settle(bridge, user, room)
        await bridge.db.execute(f"PRAGMA busy_timeout = {SQLITE_TEST_BUSY_TIMEOUT_MS}")
        ping = message_event(room, user.user_id, "ping")
        path = str(bridge.config["database.url"]).removeprefix("sqlite:")
        assert await hs.put_transaction(new_txn_id(), [ping]) == (200, {})
        locker = await lock_sqlite(path)
        try:
            await wait_notice(user, room, bridge.bot_mxid, PONG)
            await asyncio.sleep(2 * SQLITE_TEST_BUSY_TIMEOUT_MS / 1000)  # the mark timed out
            assert await inbox_rows(bridge, ping["event_id"]) == [False]
            locker.execute("ROLLBACK")
        finally:
            locker.close()
        await assert_one_pong(hs, bridge, user, room)
        assert await inbox_rows(bridge, ping["event_id"]) == [True]
        # Synapse could not push the Pong meanwhile; a ping makes it retry now.
        await bridge.bot.appservice_ping(str(bridge.config["appservice.id"]))
        await settle(bridge, user, room)
