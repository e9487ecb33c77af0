"""Key rotation: stored secrets are sealed again with the current key at start-up, so the old key
can then be dropped (loopback connector, real Synapse, both backends)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
import os
from pathlib import Path

import pytest

from bridge.__main__ import example_for
from bridge.connectors import load_connector
from bridge.core.config import Config
from devstack.bot_flows import management_room
from devstack.matrix_client import MatrixTestClient
from tests.helpers.harness import LOOPBACK, start_bridge
from tests.test_core_e2e import log_in

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


def rotate_key(config_path: Path, old_keys: dict[str, str], new_id: str) -> None:
    config = Config.load(config_path, example_for(load_connector(LOOPBACK)))
    config["bridge.secrets.old_keys"] = {**old_keys,
                                         str(config["bridge.secrets.key_id"]): str(config["bridge.secrets.key"])}
    config["bridge.secrets.key_id"] = new_id
    config["bridge.secrets.key"] = base64.b64encode(os.urandom(32)).decode()
    config.save()


async def test_secrets_sealed_with_an_old_key_are_resealed_and_the_old_key_can_go(
    bridge_config: Path, matrix_user: MakeUser,
) -> None:
    user = await matrix_user()
    bridge = await start_bridge(bridge_config)
    try:
        await log_in(bridge, user, await management_room(bridge, user), "rotator")
        [row] = await bridge.logins_table.for_user(user.user_id)
        old_id = bridge.secret_box.key_id
        assert row.metadata["password"].startswith(f"v1:{old_id}:")
    finally:
        await bridge.stop()

    rotate_key(bridge_config, {}, "k2")
    bridge = await start_bridge(bridge_config)
    try:
        [row] = await bridge.logins_table.for_user(user.user_id)
        assert row.metadata["password"].startswith("v1:k2:")
        assert bridge.logins[row.id].client is not None  # the resealed secret opens
    finally:
        await bridge.stop()

    # The old key removed from the config: the login still loads.
    config = Config.load(bridge_config, example_for(load_connector(LOOPBACK)))
    config["bridge.secrets.old_keys"] = {}
    config.save()
    bridge = await start_bridge(bridge_config)
    try:
        [row] = await bridge.logins_table.for_user(user.user_id)
        assert bridge.logins[row.id].client is not None
    finally:
        await bridge.stop()
