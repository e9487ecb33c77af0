"""The provisioning API (`/_matrix/provision/v3`, the shape of mautrix bridgev2) on its own
listener: what the bot's commands do, for a web page or an integration manager.

A request is made for one Matrix user, authenticated in one of two ways: the shared secret
(`Authorization: Bearer <provisioning.shared_secret>`, compared in constant time) with the user
named by `?user_id=` (an integration the operator trusts), or a Matrix OpenID token of the user
(`Authorization: Bearer openid:<token>`, checked with the homeserver, see `openid.py`), so a web
page can act for the user who is signed in to it. The user's permission level is checked as for
commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import hmac
import logging
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..network import ConnectorError, LoginFailed, LoginProcess, LoginStep, LoginStepKind
from .openid import PREFIX as OPENID_PREFIX
from .openid import OpenIDRejected, openid_user
from .permissions import Level
from .user import User
from .user_login import STATE_TEXT

if TYPE_CHECKING:
    from .bridge import Bridge
    from .user_login import UserLogin

log = logging.getLogger("letterbox.provisioning")

PREFIX = "/_matrix/provision/v3"
#: How long one `display_and_wait` call waits for the outside answer (the client calls again).
WAIT_S = 120.0
FLOW_ID = "default"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The Matrix user a request acts for, once authenticated.
ACTING_USER = web.RequestKey("acting_user", str)


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


class _Process:
    def __init__(self, user: User, process: LoginProcess, step: LoginStep) -> None:
        self.user = user
        self.process = process
        self.step = step
        self.lock = asyncio.Lock()  # one answer at a time (user_input and display_and_wait)


class Provisioning:
    def __init__(self, bridge: Bridge, shared_secret: str) -> None:
        self.bridge = bridge
        self._secret = shared_secret.encode()
        self._processes: dict[str, _Process] = {}
        self.app = web.Application(middlewares=[self._auth])
        r = self.app.router
        r.add_get(PREFIX + "/whoami", self.whoami)
        r.add_get(PREFIX + "/login/flows", self.login_flows)
        r.add_post(PREFIX + "/login/start/{flow_id}", self.login_start)
        r.add_post(PREFIX + "/login/step/{process_id}/{step_id}/user_input", self.login_step)
        r.add_post(PREFIX + "/login/step/{process_id}/{step_id}/display_and_wait", self.login_wait)
        r.add_get(PREFIX + "/logins", self.logins)
        r.add_post(PREFIX + "/logout/{login_id}", self.logout)
        r.add_get(PREFIX + "/resolve_identifier/{identifier}", self.resolve_identifier)
        r.add_post(PREFIX + "/create_dm/{identifier}", self.create_dm)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        named = request.query.get("user_id", "")
        if scheme == "Bearer" and token.startswith(OPENID_PREFIX):
            try:
                mxid = await openid_user(self.bridge.http, self.bridge.config["homeserver.address"],
                                         self.bridge.domain, token.removeprefix(OPENID_PREFIX))
            except OpenIDRejected as e:
                return _error(401, "M_UNKNOWN_TOKEN", e.reason)
            if named and named != mxid:
                return _error(403, "M_FORBIDDEN", "The OpenID token belongs to another user")
        elif scheme != "Bearer" or not hmac.compare_digest(token.encode(), self._secret):
            return _error(401, "M_UNKNOWN_TOKEN", "Missing or wrong shared secret")
        else:
            mxid = named
            if not mxid.startswith("@") or ":" not in mxid:
                return _error(400, "M_BAD_JSON", "The user_id query parameter must be a Matrix user ID")
        request[ACTING_USER] = mxid
        user = await self.bridge.get_user(mxid)
        if user.level < Level.USER:
            return _error(403, "M_FORBIDDEN", "That user may not use this bridge")
        try:
            return await handler(request)
        except ConnectorError as e:
            return _error(400, "M_UNKNOWN", e.reason)

    async def _user(self, request: web.Request) -> User:
        """The user the request acts for (checked by the middleware)."""
        return await self.bridge.get_user(request[ACTING_USER])

    # ---------------------------------------------------------------- reading
    def _flows(self) -> list[dict[str, str]]:
        connector = self.bridge.connector
        return [{"id": FLOW_ID, "name": connector.display_name,
                 "description": f"Log in with {connector.user_id_description}"}]

    def _login_json(self, login: UserLogin) -> dict[str, Any]:
        return {"id": login.id, "name": login.row.remote_name,
                "state": {"state_event": login.state.value, "message": STATE_TEXT[login.state],
                          "reason": login.state_reason}}

    async def whoami(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        connector = self.bridge.connector
        return web.json_response({
            "network": {"id": connector.name, "displayname": connector.display_name},
            "login_flows": self._flows(),
            "homeserver": self.bridge.domain,
            "bridge_bot": self.bridge.bot_mxid,
            "command_prefix": "!lb",
            "management_room": user.management_room,
            "logins": [self._login_json(lg) for lg in self.bridge.logins_of(user.mxid)],
        })

    async def login_flows(self, request: web.Request) -> web.Response:
        return web.json_response({"flows": self._flows()})

    async def logins(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        return web.json_response({"logins": [self._login_json(lg)
                                             for lg in self.bridge.logins_of(user.mxid)]})

    # ---------------------------------------------------------------- logging in
    def _step_json(self, process_id: str, step: LoginStep, **extra: Any) -> web.Response:
        body: dict[str, Any] = {"login_id": process_id, "type": step.kind.value,
                                "step_id": step.step_id, "instructions": step.instructions, **extra}
        if step.external is not None:
            # Also answered from outside (e.g. the OAuth provider calling the bridge back):
            # `display_and_wait` returns once that happened.
            body["external"] = True
        if step.kind == LoginStepKind.USER_INPUT:
            body["user_input"] = {"fields": [
                {"type": "password" if f.secret else "text", "id": f.id, "name": f.name,
                 "description": f.description, "default_value": f.default, "optional": f.optional}
                for f in step.fields]}
        return web.json_response(body)

    async def login_start(self, request: web.Request) -> web.Response:
        if request.match_info["flow_id"] != FLOW_ID:
            return _error(404, "M_NOT_FOUND", f"Unknown login flow; the flow is {FLOW_ID!r}")
        user = await self._user(request)
        process = self.bridge.connector.create_login(user.mxid)
        step = await process.start()
        process_id = secrets.token_urlsafe(16)
        self._processes[process_id] = _Process(user, process, step)
        return self._step_json(process_id, step)

    async def _current(self, request: web.Request) -> tuple[str, _Process] | web.Response:
        """The caller's login in progress named by the path, at the step the path names."""
        user = await self._user(request)
        process_id = request.match_info["process_id"]
        found = self._processes.get(process_id)
        if found is None or found.user.mxid != user.mxid:
            return _error(404, "M_NOT_FOUND", "No such login in progress")
        if request.match_info["step_id"] != found.step.step_id:
            return _error(400, "M_BAD_STATE", f"The login is at step {found.step.step_id!r}")
        return process_id, found

    async def login_wait(self, request: web.Request) -> web.Response:
        """Wait until the step is answered from outside (an OAuth callback), then go on."""
        current = await self._current(request)
        if isinstance(current, web.Response):
            return current
        process_id, found = current
        step = found.step
        if step.external is None:
            return _error(400, "M_BAD_STATE", "This step is answered with user_input")
        try:
            async with asyncio.timeout(WAIT_S):
                values = await asyncio.shield(step.external)
        except TimeoutError:
            return _error(408, "M_TIMEOUT", "Not answered yet; call display_and_wait again")
        return await self._submit(process_id, found, dict(values), step)

    async def login_step(self, request: web.Request) -> web.Response:
        current = await self._current(request)
        if isinstance(current, web.Response):
            return current
        process_id, found = current
        try:
            answers = await request.json()
        except ValueError:
            return _error(400, "M_NOT_JSON", "The body must be a JSON object of field values")
        if not isinstance(answers, dict):
            return _error(400, "M_BAD_JSON", "The body must be a JSON object of field values")
        values: dict[str, str] = {}
        for f in found.step.fields:
            value = answers.get(f.id)
            if value is None or value == "":
                if f.default is None and not f.optional:
                    return _error(400, "M_BAD_JSON", f"Missing field {f.id!r}")
                value = f.default or ""
            values[f.id] = str(value)
        return await self._submit(process_id, found, values, found.step)

    async def _submit(self, process_id: str, found: _Process, values: dict[str, str],
                      answering: LoginStep) -> web.Response:
        async with found.lock:
            if found.step is not answering or self._processes.get(process_id) is not found:
                return _error(400, "M_BAD_STATE", "That step was answered meanwhile")
            try:
                step = await found.process.submit(values)
            except LoginFailed as e:
                if not e.retry_step:
                    del self._processes[process_id]
                return _error(400, "M_LOGIN_FAILED", e.reason)
            return await self._went_on(process_id, found, step)

    async def _went_on(self, process_id: str, found: _Process, step: LoginStep) -> web.Response:
        if step.kind != LoginStepKind.COMPLETE:
            found.step = step
            return self._step_json(process_id, step)
        del self._processes[process_id]
        assert step.completed is not None
        login = await self.bridge.add_login(found.user, step.completed)
        return self._step_json(process_id, step, complete={"user_login_id": login.id})

    async def logout(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        wanted = request.match_info["login_id"]
        found = [lg for lg in self.bridge.logins_of(user.mxid) if wanted in (lg.id, lg.row.remote_name)]
        if not found:
            return _error(404, "M_NOT_FOUND", "You have no such login")
        await self.bridge.remove_login(found[0])
        return web.json_response({})

    # ---------------------------------------------------------------- chats
    async def _login_for(self, request: web.Request) -> UserLogin | web.Response:
        user = await self._user(request)
        logins = self.bridge.logins_of(user.mxid)
        wanted = request.query.get("login_id")
        if wanted:
            logins = [lg for lg in logins if wanted in (lg.id, lg.row.remote_name)]
        if len(logins) != 1:
            return _error(400 if logins else 404, "M_NOT_FOUND" if not logins else "M_BAD_JSON",
                          "No such login" if not logins else "Several logins: add ?login_id=")
        return logins[0]

    async def _resolve(self, request: web.Request, *, create: bool) -> web.Response:
        login = await self._login_for(request)
        if isinstance(login, web.Response):
            return login
        user = await self._user(request)
        chat = await self.bridge.open_dm(login, request.match_info["identifier"], user.mxid,
                                         create=create)
        return web.json_response({"id": chat.user_id, "name": chat.name,
                                  "mxid": self.bridge.ghosts.mxid(chat.user_id),
                                  "dm_room_mxid": chat.portal.room_id if chat.portal else None})

    async def resolve_identifier(self, request: web.Request) -> web.Response:
        return await self._resolve(request, create=False)

    async def create_dm(self, request: web.Request) -> web.Response:
        return await self._resolve(request, create=True)
