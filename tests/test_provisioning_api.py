"""The provisioning API over HTTP, against a running bridge on a real Synapse (both backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
import shutil
from typing import Any

import aiohttp
import pytest

from bridge.__main__ import example_for
from bridge.connectors import load_connector
from bridge.core.bridge import Bridge
from bridge.core.config import Config
from devstack.matrix_client import MatrixTestClient
from devstack.ports import free_port
from tests.helpers.harness import LOOPBACK, start_bridge
from tests.helpers.loopback_connector import PASSWORD

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
SECRET = "provisioning-secret-" + "x" * 24


class Api:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def call(self, method: str, path: str, user_id: str | None, body: Any = None,
                   secret: str = SECRET, **query: str) -> tuple[int, dict[str, Any]]:
        params = {"user_id": user_id, **query} if user_id else query
        async with self.session.request(
            method, f"{self.base}/_matrix/provision/v3{path}", json=body,
            params=params, headers={"Authorization": f"Bearer {secret}"},
        ) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def provisioned(bridge_config: Path, tmp_path: Path) -> AsyncIterator[tuple[Bridge, Api]]:
    path = tmp_path / "provisioned.yaml"
    shutil.copy(bridge_config, path)
    config = Config.load(path, example_for(load_connector(LOOPBACK)))
    port = free_port()
    config["provisioning.enabled"] = True
    config["provisioning.port"] = port
    config["provisioning.shared_secret"] = SECRET
    config.save()
    bridge = await start_bridge(path)
    session = aiohttp.ClientSession()
    try:
        yield bridge, Api(f"http://127.0.0.1:{port}", session)
    finally:
        await session.close()
        await bridge.stop()


async def api_login(api: Api, user_id: str, name: str) -> dict[str, Any]:
    status, step = await api.call("POST", "/login/start/default", user_id)
    assert status == 200, step
    fields = {f["id"]: f for f in step["user_input"]["fields"]}
    assert fields["password"]["type"] == "password" and fields["username"]["type"] == "text"
    path = f"/login/step/{step['login_id']}/{step['step_id']}/user_input"
    status, wrong = await api.call("POST", path, user_id, {"username": name, "password": "no"})
    assert (status, wrong["errcode"]) == (400, "M_LOGIN_FAILED") and "wrong password" in wrong["error"]
    status, done = await api.call("POST", path, user_id, {"username": name, "password": PASSWORD})
    assert status == 200 and done["type"] == "complete", done
    return done


async def test_requests_need_the_secret_and_a_permitted_user(
    provisioned: tuple[Bridge, Api], matrix_user: MakeUser
) -> None:
    _, api = provisioned
    user = await matrix_user()
    status, body = await api.call("GET", "/whoami", user.user_id, secret="wrong")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await api.call("GET", "/whoami", "@outsider:localhost")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await api.call("GET", "/whoami", user.user_id)
    assert status == 200 and body["network"]["id"] == "loopback" and body["logins"] == []


async def openid_token(user: MatrixTestClient) -> str:
    """What a web page signed in as `user` gets from the homeserver to show the bridge."""
    body = await user.request("POST", f"/user/{user.user_id}/openid/request_token", {})
    return str(body["access_token"])


async def test_an_openid_token_acts_for_its_own_user(
    provisioned: tuple[Bridge, Api], matrix_user: MakeUser
) -> None:
    _, api = provisioned
    user = await matrix_user()
    status, body = await api.call("GET", "/whoami", None, secret="openid:" + await openid_token(user))
    assert status == 200 and body["logins"] == [] and body["management_room"] is None


async def test_an_openid_token_cannot_act_for_another_user(
    provisioned: tuple[Bridge, Api], matrix_user: MakeUser
) -> None:
    _, api = provisioned
    user, other = await matrix_user(), await matrix_user()
    status, body = await api.call("GET", "/whoami", other.user_id,
                                  secret="openid:" + await openid_token(user))
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_an_unknown_openid_token_is_refused(
    provisioned: tuple[Bridge, Api], matrix_user: MakeUser
) -> None:
    _, api = provisioned
    user = await matrix_user()
    status, body = await api.call("GET", "/whoami", user.user_id, secret="openid:forged-token")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert "does not know this OpenID token" in body["error"]


async def test_login_flow_through_the_api_and_the_login_listed(
    provisioned: tuple[Bridge, Api], matrix_user: MakeUser
) -> None:
    bridge, api = provisioned
    user = await matrix_user()
    status, flows = await api.call("GET", "/login/flows", user.user_id)
    assert status == 200 and [f["id"] for f in flows["flows"]] == ["default"]
    done = await api_login(api, user.user_id, "viaapi")
    login_id = done["complete"]["user_login_id"]
    stored = await bridge.logins_table.get(login_id)
    assert stored is not None and stored.remote_name == "viaapi"
    await user.wait_for(lambda: bridge.logins[login_id].state.value == "CONNECTED")
    status, listed = await api.call("GET", "/logins", user.user_id)
    assert status == 200
    assert [(lg["id"], lg["name"], lg["state"]["state_event"]) for lg in listed["logins"]] == [
        (login_id, "viaapi", "CONNECTED")]


async def test_resolve_then_create_dm_invites_the_user(
    provisioned: tuple[Bridge, Api], matrix_user: MakeUser
) -> None:
    bridge, api = provisioned
    user = await matrix_user()
    await api_login(api, user.user_id, "dmapi")
    status, resolved = await api.call("GET", "/resolve_identifier/lena", user.user_id)
    assert status == 200 and resolved["dm_room_mxid"] is None
    assert resolved["mxid"] == bridge.ghosts.mxid("lena") and resolved["name"] == "Lena"
    status, created = await api.call("POST", "/create_dm/lena", user.user_id)
    assert status == 200 and created["dm_room_mxid"]
    assert await user.wait_for_room_invite() == created["dm_room_mxid"]


async def test_logout_through_the_api(provisioned: tuple[Bridge, Api], matrix_user: MakeUser) -> None:
    bridge, api = provisioned
    user = await matrix_user()
    login_id = (await api_login(api, user.user_id, "byeapi"))["complete"]["user_login_id"]
    other = await matrix_user()
    status, _ = await api.call("POST", f"/logout/{login_id}", other.user_id)
    assert status == 404  # not theirs
    status, _ = await api.call("POST", f"/logout/{login_id}", user.user_id)
    assert status == 200
    assert await bridge.logins_table.get(login_id) is None
