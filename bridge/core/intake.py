"""The appservice HTTP API the homeserver calls (transactions, ping, user/alias queries).

Every request must carry `Authorization: Bearer <hs_token>` (compared in constant time);
a token in the query string is never accepted. A transaction is answered 200 only after its events
are stored in the database, so a crash or a database outage makes the homeserver retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import hashlib
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from ..db import InboxTable
from .public_web import PublicWeb

log = logging.getLogger("letterbox.intake")

PREFIX = "/_matrix/app/v1"

# Receives each transaction's body before its events are stored: to-device events, device-list
# changes and one-time-key counts (MSC2409/MSC3202) go to the crypto layer this way.
ExtrasHandler = Callable[[dict[str, Any]], Awaitable[None]]


def _error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


def _ephemeral_id(txn_id: str, index: int, event: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()[:24]
    return f"~ephemeral:{txn_id}:{index}:{digest}"


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
        self.extras_handler: ExtrasHandler | None = None

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
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(token.strip().encode(), self._hs_token):
            where = "only in the query string" if "access_token" in request.query else "missing or wrong"
            log.warning("Refused request to %s: hs_token %s", request.path, where)
            self.refused += 1
            return _error(403, "M_FORBIDDEN", "Missing or invalid hs_token (use the Authorization header)")
        return await handler(request)

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
        if not isinstance(body, dict):
            return _error(400, "M_BAD_JSON", "Body must be an object")
        if self.extras_handler is not None:
            # Before the events are stored: a room key that arrives with the message it opens
            # is in the crypto store by the time the processor decrypts the message.
            try:
                await self.extras_handler(body)
            except Exception:
                log.exception("Could not hand the encryption data of transaction %s on", txn_id)
        events = [self._scrub(e) for e in body.get("events", []) if isinstance(e, dict)]
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
