"""The appservice HTTP API the homeserver calls (transactions, ping, user/alias queries).

Every request must carry `Authorization: Bearer <hs_token>` (compared in constant time);
a token in the query string is never accepted. A transaction is answered 200 only after its events
are stored in the database, so a crash or a database outage makes the homeserver retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import hashlib
import hmac
import json
import logging
import time
from typing import Any

from aiohttp import web

from ..db import InboxTable
from .public_web import PublicWeb

log = logging.getLogger("letterbox.intake")

PREFIX = "/_matrix/app/v1"
# Transactions kept for the crypto layer while it starts; beyond this many the homeserver is
# asked to send again.
MAX_EARLY_TRANSACTIONS = 1000

# Receives each transaction's body before its events are stored: to-device events, device-list
# changes and one-time-key counts (MSC2409/MSC3202) go to the crypto layer this way.
ExtrasHandler = Callable[[dict[str, Any]], Awaitable[None]]


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


def _ephemeral_id(txn_id: str, index: int, event: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()[:24]
    return f"~ephemeral:{txn_id}:{index}:{digest}"


def _malformed(body: object) -> str | None:
    """Why a transaction body cannot be taken (None: it can). Checked before anything is stored,
    so a malformed transaction is answered 400 instead of failing later."""
    if not isinstance(body, dict):
        return "the body must be an object"
    for key in ("events", "ephemeral", "de.sorunome.msc2409.ephemeral"):
        if not isinstance(body.get(key, []), list):
            return f"`{key}` must be a list"
    for event in body.get("events", []):
        if not isinstance(event, dict):
            return "every event must be an object"
        if not isinstance(event.get("event_id"), str):
            return "every event needs a string event_id"
        if not isinstance(event.get("room_id", ""), str) or not isinstance(event.get("content", {}), dict):
            return f"event {event['event_id']} has a room_id or content of the wrong type"
    return None


class RefusalLog:
    """Logs refused requests without letting a flood of them flood the log: the first at once,
    then at most one line per interval, counting what it left out."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._next_at = 0.0
        self._suppressed = 0

    def note(self, path: str, why: str) -> None:
        now = time.monotonic()
        if now < self._next_at:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more refused since the last line)" if self._suppressed else ""
        self._log.warning("Refused request to %s: hs_token %s%s", path, why, more)
        self._suppressed = 0
        self._next_at = now + self._interval_s


class Intake:
    """aiohttp application that authenticates the homeserver and records transactions."""

    def __init__(
        self, hs_token: str, inbox: InboxTable, on_new_events: Callable[[], None],
        scrub: Callable[[dict[str, Any]], dict[str, Any]] = lambda event: event,
        public: PublicWeb | None = None,
    ) -> None:
        self._hs_token = hs_token.encode()
        self._public = public
        self._inbox = inbox
        # Applied to every event before it is stored: a secret never reaches the database.
        self._scrub = scrub
        self._on_new_events = on_new_events
        self.app = web.Application(middlewares=[self._auth_middleware])
        self.app.router.add_put(PREFIX + "/transactions/{txn_id}", self._transaction)
        self.app.router.add_post(PREFIX + "/ping", self._ping)
        self.app.router.add_get(PREFIX + "/users/{user_id}", self._not_found)
        self.app.router.add_get(PREFIX + "/rooms/{alias}", self._not_found)
        self.pings = 0
        # Requests refused for their hs_token (start-up tells a wrong token from a wrong URL).
        self.refused = 0
        self._refusals = RefusalLog(log)
        self.extras_handler: ExtrasHandler | None = None
        # Set while the bridge expects an extras handler that is not there yet (encryption still
        # starting): the transactions' bodies are kept in memory and handed over, in order, when
        # the handler comes (before the processor starts), so room keys sent during start-up are
        # not dropped. (A 503 instead would put the homeserver into its retry back-off.)
        self.extras_expected = False
        self._early: list[dict[str, Any]] = []
        self._extras_lock = asyncio.Lock()  # to-device events are handled in arrival order

    @web.middleware
    async def _auth_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._public is not None and self._public.handles(request):
            return await self._public.dispatch(request)  # browsers: each page checks its own
        if not request.path.startswith(PREFIX):
            return _error(404, "M_UNRECOGNIZED", "Unrecognized request")
        # Only the Authorization header counts. A token in the query string is never accepted;
        # it is ignored beside a valid header (Synapse's legacy mode sends both).
        header = request.headers.get("Authorization")
        scheme, _, token = (header or "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(token.strip().encode(), self._hs_token):
            self.refused += 1
            if header is None and "access_token" not in request.query:
                self._refusals.note(request.path, "missing")
                # The spec's answer to a request without credentials.
                return _error(401, "M_UNAUTHORIZED", "Missing hs_token (use the Authorization header)")
            where = "only in the query string" if header is None else "wrong"
            self._refusals.note(request.path, where)
            return _error(403, "M_FORBIDDEN", "Invalid hs_token (use the Authorization header)")
        return await handler(request)

    async def set_extras_handler(self, handler: ExtrasHandler) -> None:
        """Install the handler and give it what arrived before it, in order."""
        async with self._extras_lock:
            early, self._early = self._early, []
            if early:
                log.info("Handing %d transactions of the start-up to the crypto layer", len(early))
            for body in early:
                await self._hand_over("(start-up)", body, handler)
            self.extras_handler = handler

    def drop_extras(self) -> None:
        """The bridge runs without encryption after all: nothing waits for a handler."""
        self.extras_expected = False
        self._early = []

    @staticmethod
    async def _hand_over(txn_id: str, body: dict[str, Any], handler: ExtrasHandler) -> None:
        try:
            await handler(body)
        except Exception:
            log.exception("Could not hand the encryption data of transaction %s on", txn_id)

    async def _ping(self, request: web.Request) -> web.Response:
        self.pings += 1
        return web.json_response({})

    async def _not_found(self, request: web.Request) -> web.Response:
        return _error(404, "M_NOT_FOUND", "Not provisioned on demand")

    async def _transaction(self, request: web.Request) -> web.Response:
        txn_id = request.match_info["txn_id"]
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "M_NOT_JSON", "Body is not JSON")
        problem = _malformed(body)
        if problem:
            log.warning("Refused transaction %s: %s", txn_id, problem)
            return _error(400, "M_BAD_JSON", problem)
        async with self._extras_lock:
            if self.extras_handler is not None:
                # Before the events are stored: a room key that arrives with the message it
                # opens is in the crypto store by the time the processor decrypts the message.
                await self._hand_over(txn_id, body, self.extras_handler)
            elif self.extras_expected:
                if len(self._early) >= MAX_EARLY_TRANSACTIONS:
                    return _error(503, "M_UNKNOWN", "Starting: encryption is not ready yet")
                self._early.append(body)
        events = [self._scrub(e) for e in body.get("events", [])]
        ephemeral = body.get("ephemeral") or body.get("de.sorunome.msc2409.ephemeral") or []
        for index, edu in enumerate(e for e in ephemeral if isinstance(e, dict)):
            events.append({**edu, "event_id": _ephemeral_id(txn_id, index, edu), "ephemeral": True})
        try:
            fresh = await self._inbox.record_transaction(txn_id, events)
        except Exception:
            log.exception("Could not store transaction %s; asking the homeserver to retry", txn_id)
            return _error(503, "M_UNKNOWN", "Temporarily unable to store the transaction")
        if fresh:
            log.debug("Stored transaction %s with %d events", txn_id, len(events))
            self._on_new_events()
        else:
            log.debug("Transaction %s was already stored", txn_id)
        return web.json_response({})
