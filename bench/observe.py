"""Seeing bridged events arrive at the Matrix client, with the time each one was first seen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import json
import time
from typing import Any
from urllib.parse import quote

from devstack.matrix_client import Event, MatrixTestClient

# Keyed by a marker found in the event's body; value: time.monotonic() when first seen.
Arrivals = dict[str, float]


class RoomWatcher:
    """Records when events of one room become visible to the user.

    mode "sync": a /sync long-poll (Synapse answers as soon as an event is persisted, so the
    arrival is seen within a round trip, with no polling error and next to no extra load).
    mode "messages": GET /rooms/{room}/messages every `interval_s` (adds up to `interval_s`).
    `marker_of(event)` names the events to record (None: ignore the event).
    """

    def __init__(self, client: MatrixTestClient, room_id: str, marker_of: Callable[[Event], str | None],
                 *, mode: str = "sync", interval_s: float = 0.05) -> None:
        if mode not in ("sync", "messages"):
            raise ValueError(f"unknown watch mode {mode!r}")
        self.client = client
        self.room_id = room_id
        self.marker_of = marker_of
        self.mode = mode
        self.interval_s = interval_s
        self.arrivals: Arrivals = {}
        self.order: list[str] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._since: str | None = None
        self._filter = json.dumps({
            "room": {"rooms": [room_id], "timeline": {"limit": 1000},
                     "state": {"lazy_load_members": True}, "ephemeral": {"types": []},
                     "account_data": {"types": []}},
            "presence": {"types": []}, "account_data": {"types": []},
        })

    async def start(self) -> None:
        """Take the room's current position; only events after it are recorded."""
        if self.mode == "sync":
            data = await self.client.request("GET", "/sync", filter=self._filter, timeout="0")
            self._since = data["next_batch"]
        else:
            self._seen_ids: set[str] = {e["event_id"] for e in await self._latest()}
        self._task = asyncio.create_task(self._run(), name="room-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def wait_for(self, markers: list[str] | set[str], timeout: float) -> None:
        """Return once every marker has been seen; TimeoutError naming the missing ones."""
        wanted = set(markers)
        deadline = time.monotonic() + timeout
        while not wanted <= self.arrivals.keys():
            if self._task is not None and self._task.done():
                self._task.result()  # re-raise the watcher's error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(wanted - self.arrivals.keys())
                raise TimeoutError(f"{len(missing)} event(s) not seen within {timeout:.0f} s, "
                                   f"e.g. {missing[:3]}")
            self._changed.clear()
            try:
                async with asyncio.timeout(min(remaining, 1.0)):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def _record(self, events: list[Event], now: float) -> None:
        for event in events:
            marker = self.marker_of(event)
            if marker is not None and marker not in self.arrivals:
                self.arrivals[marker] = now
                self.order.append(marker)
        self._changed.set()

    async def _run(self) -> None:
        while True:
            if self.mode == "sync":
                data = await self.client.request("GET", "/sync", filter=self._filter,
                                                 since=self._since, timeout="1000")
                now = time.monotonic()
                self._since = data["next_batch"]
                room = data.get("rooms", {}).get("join", {}).get(self.room_id, {})
                self._record(room.get("timeline", {}).get("events", []), now)
            else:
                events = await self._latest()
                now = time.monotonic()
                fresh = [e for e in reversed(events) if e["event_id"] not in self._seen_ids]
                self._seen_ids.update(e["event_id"] for e in fresh)
                self._record(fresh, now)
                await asyncio.sleep(self.interval_s)

    async def _latest(self) -> list[dict[str, Any]]:
        data = await self.client.request("GET", f"/rooms/{quote(self.room_id)}/messages",
                                         dir="b", limit="50")
        return list(data.get("chunk", []))
