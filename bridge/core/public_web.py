"""Pages the bridge serves to browsers under `bridge.public_url` (e.g. an OAuth callback).

The operator's reverse proxy maps `bridge.public_url` to `PUBLIC_PREFIX` on the appservice
listener. Only routes a connector registered answer; nothing here needs the hs_token, so every
handler must authenticate its request itself (one-time state, CSRF token). Every answer is marked
not cacheable, not frameable and sends no Referer (the URLs carry one-time codes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import logging

from aiohttp import web

log = logging.getLogger("letterbox.public_web")

PUBLIC_PREFIX = "/public"

PublicHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'",
}


class PublicWeb:
    """Routes registered by connectors, reachable at `url_for(path)` when a public URL is set."""

    def __init__(self, public_url: str | None) -> None:
        self.public_url = public_url.rstrip("/") if public_url else None
        self._routes: dict[tuple[str, str], PublicHandler] = {}

    def add_route(self, method: str, path: str, handler: PublicHandler) -> None:
        if not path.startswith("/"):
            raise ValueError("a public path starts with /")
        self._routes[(method.upper(), path)] = handler

    def url_for(self, path: str) -> str | None:
        return f"{self.public_url}{path}" if self.public_url else None

    def handles(self, request: web.Request) -> bool:
        return request.path == PUBLIC_PREFIX or request.path.startswith(PUBLIC_PREFIX + "/")

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path[len(PUBLIC_PREFIX):]
        handler = self._routes.get((request.method, path)) if self.public_url else None
        if handler is None:
            response: web.StreamResponse = web.Response(status=404, text="Not found")
        else:
            try:
                response = await handler(request)
            except web.HTTPException:
                raise
            except Exception:
                log.exception("Public page %s %s failed", request.method, path)
                response = web.Response(status=500, text="Internal error; see the bridge log.")
        response.headers.update(_HEADERS)
        return response
