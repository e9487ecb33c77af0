"""A minimal real Matrix client (client-server API over HTTP) that plays the human user."""

from __future__ import annotations

from collections.abc import Callable
import itertools
import time
from typing import Any
from urllib.parse import quote

import aiohttp

Event = dict[str, Any]


class MatrixTestClient:
    """Syncs incrementally and keeps every timeline event and invite it has seen."""

    def __init__(self, hs_url: str, user_id: str, access_token: str) -> None:
        self.hs_url = hs_url.rstrip("/")
        self.user_id = user_id
        self.token = access_token
        self.session = aiohttp.ClientSession()
        self.since: str | None = None
        self.timeline: dict[str, list[Event]] = {}
        self.invites: dict[str, list[Event]] = {}
        self.ephemeral: dict[str, list[Event]] = {}
        self.joined: set[str] = set()
        self._txn = itertools.count(int(time.time() * 1000))

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        url = f"{self.hs_url}/_matrix/client/v3{path}"
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.request(method, url, json=body, params=params or None,
                                        headers=headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path} -> {resp.status} {data}")
            return data

    async def create_dm(self, invitee: str) -> str:
        data = await self.request("POST", "/createRoom", {
            "is_direct": True, "invite": [invitee], "preset": "trusted_private_chat",
        })
        self.joined.add(data["room_id"])
        return data["room_id"]

    async def send(self, room_id: str, content: dict[str, Any], event_type: str = "m.room.message") -> str:
        txn = next(self._txn)
        data = await self.request("PUT", f"/rooms/{quote(room_id)}/send/{event_type}/{txn}", content)
        return data["event_id"]

    async def send_text(self, room_id: str, body: str, **extra: Any) -> str:
        return await self.send(room_id, {"msgtype": "m.text", "body": body, **extra})

    async def join(self, room_id: str) -> None:
        await self.request("POST", f"/join/{quote(room_id)}", {})
        self.joined.add(room_id)

    async def upload(self, data: bytes, content_type: str, filename: str) -> str:
        url = f"{self.hs_url}/_matrix/media/v3/upload"
        async with self.session.post(url, data=data, params={"filename": filename}, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type}) as resp:
            body = await resp.json()
            if resp.status >= 400:
                raise RuntimeError(f"upload -> {resp.status} {body}")
            return body["content_uri"]

    async def download(self, mxc: str) -> bytes:
        server, media_id = mxc.removeprefix("mxc://").split("/", 1)
        url = f"{self.hs_url}/_matrix/client/v1/media/download/{server}/{media_id}"
        async with self.session.get(url, headers={"Authorization": f"Bearer {self.token}"}) as resp:
            resp.raise_for_status()
            return await resp.read()

    async def sync_once(self, timeout_ms: int = 1000) -> None:
        params: dict[str, Any] = {"timeout": str(timeout_ms)}
        if self.since:
            params["since"] = self.since
        else:
            params["timeout"] = "0"
        data = await self.request("GET", "/sync", **params)
        self.since = data["next_batch"]
        rooms = data.get("rooms", {})
        for room_id, room in rooms.get("join", {}).items():
            self.joined.add(room_id)
            self.timeline.setdefault(room_id, []).extend(room.get("timeline", {}).get("events", []))
            self.ephemeral.setdefault(room_id, []).extend(room.get("ephemeral", {}).get("events", []))
        for room_id, room in rooms.get("invite", {}).items():
            self.invites.setdefault(room_id, []).extend(room.get("invite_state", {}).get("events", []))

    async def wait_for(self, find: Callable[[], Any], timeout: float = 15.0,
                       describe: Callable[[], str] | None = None) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = find()
            if found:
                return found
            if time.monotonic() > deadline:
                seen = describe() if describe else ""
                raise TimeoutError(f"condition not met within {timeout:.1f}s. {seen}")
            await self.sync_once(timeout_ms=500)

    async def wait_for_event(self, room_id: str, pred: Callable[[Event], bool], timeout: float = 15.0) -> Event:
        return await self.wait_for(
            lambda: next((e for e in self.timeline.get(room_id, []) if pred(e)), None), timeout)

    async def wait_for_invite(self, pred: Callable[[str, list[Event]], bool] | None = None,
                              timeout: float = 15.0) -> str:
        def find() -> str | None:
            for room_id, state in self.invites.items():
                if room_id not in self.joined and (pred is None or pred(room_id, state)):
                    return room_id
            return None
        return await self.wait_for(find, timeout)

    async def wait_for_room_invite(self, timeout: float = 15.0) -> str:
        """The next invite to a room that is not a space."""
        return await self.wait_for_invite(lambda _, state: not is_space(state), timeout)

    def messages(self, room_id: str, sender: str | None = None) -> list[Event]:
        return [e for e in self.timeline.get(room_id, [])
                if e.get("type") == "m.room.message" and (sender is None or e["sender"] == sender)]

    async def room_state(self, room_id: str) -> list[Event]:
        return await self.request("GET", f"/rooms/{quote(room_id)}/state")


def is_space(stripped_state: list[Event]) -> bool:
    return any(e.get("type") == "m.room.create" and e.get("content", {}).get("type") == "m.space"
               for e in stripped_state)
