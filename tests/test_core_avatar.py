"""The bot's avatar and its spaces' (`appservice.bot_avatar`), on a real Synapse (both backends)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
import shutil

import pytest

from bridge.__main__ import example_for
from bridge.connectors import load_connector
from bridge.core.avatar import packaged_avatar
from bridge.core.bridge import Bridge
from bridge.core.config import Config
from bridge.network import ConfigError
from devstack.bot_flows import management_room
from devstack.matrix_client import MatrixTestClient, is_space
from tests.helpers.harness import LOOPBACK, start_bridge
from tests.test_core_e2e import log_in

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


async def shown_avatar(user: MatrixTestClient, mxid: str) -> str:
    profile = await user.request("GET", f"/profile/{mxid}")
    return str(profile["avatar_url"])


async def test_the_bot_shows_the_shipped_avatar(bridge: Bridge, matrix_user: MakeUser) -> None:
    user = await matrix_user()
    mxc = await shown_avatar(user, bridge.bot_mxid)
    assert mxc.startswith("mxc://") and await user.download(mxc) == packaged_avatar()


async def test_a_restart_reuses_the_uploaded_avatar(bridge_config: Path, matrix_user: MakeUser) -> None:
    first = await start_bridge(bridge_config)
    await first.stop()
    second = await start_bridge(bridge_config)
    await second.stop()
    assert first.avatar is not None and second.avatar == first.avatar
    user = await matrix_user()
    assert await shown_avatar(user, second.bot_mxid) == second.avatar


async def test_a_login_space_shows_the_bot_avatar(bridge: Bridge, matrix_user: MakeUser) -> None:
    user = await matrix_user()
    room = await management_room(bridge, user)
    client = await log_in(bridge, user, room, "spaced")
    await client.receive("nora", "hello")
    space = await user.wait_for_invite(lambda _, state: is_space(state))
    await user.join(space)
    state = {(e["type"], e.get("state_key")): e["content"] for e in await user.room_state(space)}
    assert state[("m.room.avatar", "")]["url"] == bridge.avatar


async def test_an_unreadable_avatar_file_stops_start_up_naming_the_key(
    bridge_config: Path, tmp_path: Path
) -> None:
    path = tmp_path / "no-avatar.yaml"
    shutil.copy(bridge_config, path)
    config = Config.load(path, example_for(load_connector(LOOPBACK)))
    config["appservice.bot_avatar"] = str(tmp_path / "missing.png")
    config.save()
    with pytest.raises(ConfigError) as raised:
        await start_bridge(path)
    assert raised.value.key == "appservice.bot_avatar" and "missing.png" in str(raised.value)
