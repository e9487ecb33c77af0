"""End-to-bridge encryption in the core, against the real Synapse, with matrix-nio (vodozemac) as
the user's client: the bot's device, encrypted management rooms, undecryptable events, and
encryption turned off. Both database backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
import uuid

from aiohttp.test_utils import TestClient, TestServer
from mautrix.types import EventType, RoomID, UserID
from nio import RoomMessage, RoomMessageText
import pytest

from bridge.__main__ import load_config
from bridge.connectors import load_connector
from bridge.core.bridge import Bridge
from bridge.core.intake import Intake
from bridge.core.part_sender import part_txn_id
from bridge.core.sending import TXN_KEY
from bridge.db import PendingPart
from bridge.network import MessageID, NetworkUserID, PortalID, RemoteMessage, UserInfo
from bridge.network.events import ConvertedPart
from devstack.e2ee_client import ENCRYPTION_STATE, E2EEUser
from devstack.matrix_client import MatrixTestClient
from devstack.stack import Synapse
from tests.helpers.harness import LOOPBACK, BridgeSetup, start_bridge
from tests.helpers.loopback_connector import PASSWORD, LoopbackClient

pytestmark = pytest.mark.servers

FAST = {"encryption.decrypt_timeout": 1}
MakeE2EEUser = Callable[[], Awaitable[E2EEUser]]


@pytest.fixture
def e2ee_config(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str,
                tmp_path: Path) -> Path:
    return bridge_setups["loopback"].config_for(tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
                                                core={"encryption.default": True, **FAST})


@pytest.fixture
async def e2ee_user(synapse: Synapse, tmp_path: Path) -> AsyncIterator[MakeE2EEUser]:
    users: list[E2EEUser] = []

    async def make() -> E2EEUser:
        name = f"nio{uuid.uuid4().hex[:8]}"
        user_id, _ = synapse.register_user(name, "pass-" + name)
        user = E2EEUser(synapse.hs_url, user_id, tmp_path / name)
        await user.login("pass-" + name)
        users.append(user)
        return user

    yield make
    for user in users:
        await user.close()


async def encrypted_management_room(bridge: Bridge, user: E2EEUser) -> str:
    room = await user.create_encrypted_dm(bridge.bot_mxid)
    await user.wait_notice(room, bridge.bot_mxid, "Send `help`")
    return room


async def test_bot_device_keys_are_published_and_kept_across_restarts(e2ee_config: Path) -> None:
    bridge = await start_bridge(e2ee_config)
    try:
        assert bridge.encryption is not None
        device, identity = bridge.encryption.device_id, bridge.encryption.machine.account.identity_key
        assert bridge.encryption.client is not None
        keys = await bridge.encryption.client.query_keys([bridge.bot_mxid])
        published = keys.device_keys[bridge.bot_mxid][device]
        assert published.curve25519 == identity
    finally:
        await bridge.stop()
    again = await start_bridge(e2ee_config)
    try:
        assert again.encryption is not None
        assert again.encryption.device_id == device
        assert again.encryption.machine.account.identity_key == identity
    finally:
        await again.stop()


async def test_commands_in_an_encrypted_dm_are_answered_encrypted(
    e2ee_config: Path, e2ee_user: MakeE2EEUser
) -> None:
    bridge = await start_bridge(e2ee_config)
    try:
        user = await e2ee_user()
        room = await encrypted_management_room(bridge, user)
        await user.send_text(room, "ping")
        await user.wait_notice(room, bridge.bot_mxid, "Pong!")
        from_bot = [e for e in user.events[room]
                    if e.sender == bridge.bot_mxid and isinstance(e, RoomMessage)]
        assert from_bot and all(e.decrypted for e in from_bot), "the bot wrote in the clear"
    finally:
        await bridge.stop()


async def test_login_in_an_encrypted_dm_removes_the_password(
    e2ee_config: Path, e2ee_user: MakeE2EEUser
) -> None:
    bridge = await start_bridge(e2ee_config)
    try:
        user = await e2ee_user()
        room = await encrypted_management_room(bridge, user)
        await user.send_text(room, "login")
        await user.wait_notice(room, bridge.bot_mxid, "Username")
        await user.send_text(room, "tester")
        await user.wait_notice(room, bridge.bot_mxid, "Password")
        secret = await user.send_text(room, PASSWORD)
        await user.wait_notice(room, bridge.bot_mxid, "Logged in to loopback as tester")
        event = await user.client.room_get_event(room, secret)
        assert event.event.source["content"] == {}, event.event.source  # type: ignore[union-attr]
    finally:
        await bridge.stop()


async def test_an_undecryptable_message_gets_a_notice_and_a_failed_status(
    e2ee_config: Path, e2ee_user: MakeE2EEUser, matrix_user: Callable[..., Awaitable[MatrixTestClient]]
) -> None:
    bridge = await start_bridge(e2ee_config)
    try:
        user = await e2ee_user()
        room = await encrypted_management_room(bridge, user)
        # A message encrypted with a session the bridge never received.
        event_id = await user.send_raw(room, "m.room.encrypted", {
            "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEn" + "A" * 40,
            "session_id": "never-shared-session", "device_id": user.client.device_id,
            "sender_key": user.client.olm.account.identity_keys["curve25519"],  # type: ignore[union-attr]
        })
        await user.wait_notice(room, bridge.bot_mxid, "I could not read your message")
        status = await user.wait_for_event(
            room, lambda e: e.source.get("type") == "com.beeper.message_send_status"
            and e.source["content"]["m.relates_to"]["event_id"] == event_id)
        assert status.source["content"]["status"] == "FAIL_PERMANENT"
        assert status.source["content"]["reason"] == "m.undecryptable"
    finally:
        await bridge.stop()


async def test_with_encryption_off_an_encrypted_room_gets_a_notice(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, tmp_path: Path,
    matrix_user: Callable[..., Awaitable[MatrixTestClient]],
) -> None:
    config = bridge_setups["loopback"].config_for(tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
                                                  core={"encryption.allow": False})
    bridge = await start_bridge(config)
    try:
        assert bridge.encryption is None
        user = await matrix_user()
        room = (await user.request("POST", "/createRoom", {
            "is_direct": True, "invite": [bridge.bot_mxid], "preset": "trusted_private_chat",
            "initial_state": [ENCRYPTION_STATE]}))["room_id"]
        await user.wait_for_event(room, lambda e: e.get("sender") == bridge.bot_mxid
                                  and "Send `help`" in e["content"].get("body", ""))
        await user.send(room, {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x",
                               "session_id": "s", "device_id": "D", "sender_key": "k"},
                        event_type="m.room.encrypted")
        notice = await user.wait_for_event(room, lambda e: e.get("sender") == bridge.bot_mxid
                                           and "encryption is turned off" in e["content"].get("body", ""))
        assert notice["content"]["msgtype"] == "m.notice"
    finally:
        await bridge.stop()


async def loopback_login(bridge: Bridge, user: E2EEUser, room: str, name: str) -> LoopbackClient:
    await user.send_text(room, "login")
    await user.wait_notice(room, bridge.bot_mxid, "Username")
    await user.send_text(room, name)
    await user.wait_notice(room, bridge.bot_mxid, "Password")
    await user.send_text(room, PASSWORD)
    await user.wait_notice(room, bridge.bot_mxid, f"Logged in to loopback as {name}")
    return bridge.connector.clients[name]  # type: ignore[attr-defined]


def text_bodies(user: E2EEUser, room: str) -> list[str]:
    return [e.body for e in user.events.get(room, []) if isinstance(e, RoomMessageText)]


async def test_encryption_turned_on_in_an_existing_portal_keeps_it_working(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, tmp_path: Path,
    e2ee_user: MakeE2EEUser,
) -> None:
    config = bridge_setups["loopback"].config_for(tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
                                                  core=FAST)  # portals are created in the clear
    bridge = await start_bridge(config)
    try:
        user = await e2ee_user()
        client = await loopback_login(bridge, user, await encrypted_management_room(bridge, user), "turn")
        await client.receive("hank", "before encryption")
        portal = await user.wait_for_direct_invite()
        await user.join(portal)
        before = await user.wait_for_event(portal, lambda e: isinstance(e, RoomMessageText)
                                           and e.body == "before encryption")
        assert not before.decrypted
        await user.client.room_put_state(portal, "m.room.encryption",
                                         {"algorithm": "m.megolm.v1.aes-sha2"})
        await user.sync()
        await user.send_text(portal, "encrypted from me")
        sent = await client.sent.get()
        assert sent.content["body"] == "encrypted from me"
        await client.receive("hank", "after encryption")
        after = await user.wait_for_event(portal, lambda e: isinstance(e, RoomMessageText)
                                          and e.body == "after encryption")
        assert after.decrypted
    finally:
        await bridge.stop()


async def test_a_pending_part_is_found_in_an_encrypted_room_after_a_crash(
    e2ee_config: Path, e2ee_user: MakeE2EEUser
) -> None:
    """The exactly-once marker of a part sent before a crash is inside the ciphertext: the
    bridge reads its own encrypted events back to find it."""
    bridge = await start_bridge(e2ee_config)
    try:
        user = await e2ee_user()
        client = await loopback_login(bridge, user, await encrypted_management_room(bridge, user), "enc")
        await client.receive("ivy", "opening")
        portal = await user.wait_for_direct_invite()
        await user.join(portal)
        await user.wait_for_event(portal, lambda e: isinstance(e, RoomMessageText) and e.body == "opening")
        token = uuid.uuid4().hex[:8]
        login_id = client.login.login_id
        message_id = MessageID(f"msg-{token}")
        row = await bridge.get_portal("dm:ivy", bridge.logins[login_id])
        await bridge.pending_parts.begin([
            PendingPart(receiver=login_id, id=message_id, part_id="0", portal_id=row.row.id,
                        room_id=portal, txn_id=part_txn_id(bridge.txn_key, login_id, message_id, "0"))])
        intent = await bridge.ghosts.intent_for(NetworkUserID("ivy"))
        earlier = await intent.send_message_event(
            RoomID(portal), EventType.ROOM_MESSAGE,
            {"msgtype": "m.text", "body": f"text {token}", "m.mentions": {},
             TXN_KEY: part_txn_id(bridge.txn_key, login_id, message_id, "0")}, txn_id=f"other-{token}")
        await client.remote(RemoteMessage(
            portal=PortalID("dm:ivy"), sender=NetworkUserID("ivy"), sender_info=UserInfo(name="Ivy"),
            timestamp=datetime.now(UTC), message_id=message_id,
            parts=[ConvertedPart("m.room.message", {"msgtype": "m.text", "body": f"text {token}",
                                                    "m.mentions": {}})]))
        await client.receive("ivy", f"sentinel {token}")
        await user.wait_for_event(portal, lambda e: isinstance(e, RoomMessageText)
                                  and e.body == f"sentinel {token}")
        assert text_bodies(user, portal).count(f"text {token}") == 1
        first = await bridge.messages.first_part(login_id, message_id)
        assert first is not None and first.mxid == earlier
    finally:
        await bridge.stop()


async def test_a_new_device_of_the_user_reads_the_portal_after_a_restart(
    e2ee_config: Path, synapse: Synapse, tmp_path: Path
) -> None:
    name = f"nio{uuid.uuid4().hex[:8]}"
    user_id, _ = synapse.register_user(name, "pass-" + name)
    first = E2EEUser(synapse.hs_url, user_id, tmp_path / "first")
    second = E2EEUser(synapse.hs_url, user_id, tmp_path / "second")
    bridge = await start_bridge(e2ee_config)
    try:
        await first.login("pass-" + name)
        client = await loopback_login(bridge, first, await encrypted_management_room(bridge, first), "dev")
        await client.receive("jack", "to the first device")
        portal = await first.wait_for_direct_invite()
        await first.join(portal)
        await first.wait_for_event(portal, lambda e: isinstance(e, RoomMessageText) and e.decrypted)
    finally:
        await bridge.stop()
    bridge = await start_bridge(e2ee_config)
    try:
        await second.login("pass-" + name)
        enc = bridge.encryption
        assert enc is not None

        async def rotated() -> bool:  # the device-list change reached the bridge
            devices = await enc.store.get_devices(UserID(user_id)) or {}
            return second.client.device_id in devices and \
                await enc.store.get_outbound_group_session(RoomID(portal)) is None
        await second.wait_for_async(rotated, what="the bridge to see the new device")
        client = bridge.connector.clients["dev"]  # type: ignore[attr-defined]
        # (the loopback connector numbers messages from 1 again after a restart: a fresh ID)
        await client.remote(RemoteMessage(
            portal=PortalID("dm:jack"), sender=NetworkUserID("jack"), sender_info=UserInfo(name="Jack"),
            timestamp=datetime.now(UTC), message_id=MessageID(f"after-{uuid.uuid4().hex}"),
            parts=[ConvertedPart("m.room.message", {"msgtype": "m.text", "body": "to the new device too",
                                                    "m.mentions": {}})]))
        event = await second.wait_for_event(portal, lambda e: isinstance(e, RoomMessageText)
                                            and e.body == "to the new device too")
        assert event.decrypted
    finally:
        await bridge.stop()
        await first.close()
        await second.close()


async def test_encryption_data_that_arrives_while_encryption_starts_is_handed_over_after(
    e2ee_config: Path,
) -> None:
    """Room keys travel in transactions: one taken while the crypto layer is still starting is
    stored at once and its to-device part given to the crypto layer, in order, once it runs."""
    bridge = await start_bridge(e2ee_config)
    handed: list[str] = []

    async def crypto_layer(body: dict[str, Any]) -> None:
        handed.append(body["de.sorunome.msc2409.to_device"][0]["content"]["n"])

    intake = Intake(str(bridge.config["appservice.hs_token"]), bridge.inbox, lambda: None)
    intake.extras_expected = True  # as while Bridge.start runs, encryption configured
    headers = {"Authorization": f"Bearer {bridge.config['appservice.hs_token']}"}

    def txn(n: str) -> dict[str, Any]:
        return {"events": [], "de.sorunome.msc2409.to_device": [
            {"type": "org.example.probe", "sender": bridge.bot_mxid, "content": {"n": n}}]}

    async with TestClient(TestServer(intake.app)) as homeserver:
        for n in ("1", "2"):
            resp = await homeserver.put(f"/_matrix/app/v1/transactions/early-{n}", json=txn(n),
                                        headers=headers)
            assert resp.status == 200
        assert handed == []
        await intake.set_extras_handler(crypto_layer)
        assert handed == ["1", "2"]
        resp = await homeserver.put("/_matrix/app/v1/transactions/later", json=txn("3"),
                                    headers=headers)
        assert resp.status == 200 and handed == ["1", "2", "3"]
    await bridge.stop()


def test_a_bridge_with_encryption_keeps_early_encryption_data(e2ee_config: Path) -> None:
    connector = load_connector(LOOPBACK)
    bridge = Bridge(load_config(e2ee_config, connector), connector)
    assert bridge.intake.extras_expected and bridge.intake.extras_handler is None
