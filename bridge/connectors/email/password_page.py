"""A one-time web page of the bridge where a password is typed instead of into Matrix.

The bot sends a link to `<bridge.public_url>/password?t=<token>`: the random token is the only
key to the page, which names the mailbox and holds a form. The form is accepted once, within
`PAGE_TTL_S` of the link, only with the page's own CSRF token (a second random value, compared in
constant time) and, when the browser sends one, an Origin of the public URL. The password goes
straight to the waiting login step; it is never stored, logged or shown.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
import hmac
import html
import secrets
import time
from urllib.parse import urlsplit

from aiohttp import web

from .oauth.callback import page

PAGE_PATH = "/password"
PAGE_TTL_S = 600.0
MAX_FORM_BYTES = 16 * 1024


@dataclass(slots=True, eq=False)
class PasswordRequest:
    token: str
    csrf: str
    address: str
    field_id: str
    expires_at: float
    answer: asyncio.Future[dict[str, str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class PasswordPages:
    def __init__(self, public_origin: str | None) -> None:
        self._open: dict[str, PasswordRequest] = {}
        self._origin = public_origin

    def open(self, address: str, field_id: str) -> PasswordRequest:
        """A page whose form answers the login field `field_id`."""
        self._expire()
        request = PasswordRequest(secrets.token_urlsafe(24), secrets.token_urlsafe(24), address,
                                  field_id, time.monotonic() + PAGE_TTL_S)
        self._open[request.token] = request
        return request

    def close(self, request: PasswordRequest) -> None:
        if self._open.get(request.token) is request:
            del self._open[request.token]
        if not request.answer.done():
            request.answer.cancel()

    def _expire(self) -> None:
        now = time.monotonic()
        for request in list(self._open.values()):
            if request.expires_at < now:
                self.close(request)

    def _find(self, token: str) -> PasswordRequest | None:
        self._expire()
        return self._open.get(token)

    async def show(self, request: web.Request) -> web.Response:
        pending = self._find(request.query.get("t", ""))
        if pending is None:
            return _gone()
        return web.Response(content_type="text/html", text=(
            "<!doctype html><html><head><meta charset=utf-8><title>Letterbox</title>"
            "<meta name=viewport content='width=device-width'></head>"
            "<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
            f"<h1>Password for {html.escape(pending.address)}</h1>"
            "<p>It goes to the bridge only, not into Matrix. This page works once.</p>"
            f"<form method=post action='{PAGE_PATH.lstrip('/')}'>"
            f"<input type=hidden name=t value='{html.escape(pending.token)}'>"
            f"<input type=hidden name=csrf value='{html.escape(pending.csrf)}'>"
            "<input type=password name=password autocomplete=current-password autofocus required>"
            " <button type=submit>Send</button></form></body></html>"))

    async def receive(self, request: web.Request) -> web.Response:
        if request.content_length is None or request.content_length > MAX_FORM_BYTES:
            return page("Refused", "The form was too large or not sent as a form.", 400)
        origin = request.headers.get("Origin")
        if origin is not None and self._origin is not None and origin != self._origin:
            return page("Refused", "This form was sent from another site.", 403)
        form = await request.post()
        pending = self._find(str(form.get("t", "")))
        if pending is None:
            return _gone()
        if not hmac.compare_digest(str(form.get("csrf", "")).encode(), pending.csrf.encode()):
            return page("Refused", "This form does not belong to this page; open the link again.",
                        403)
        password = str(form.get("password", ""))
        if not password:
            return page("Empty", "The password must not be empty; go back and type it.", 400)
        del self._open[pending.token]  # single use, whatever happens next
        if pending.answer.done():  # the login was cancelled or moved on meanwhile
            return _gone()
        pending.answer.set_result({pending.field_id: password})
        return page("Received", "Letterbox is checking your mailbox; the result appears in your "
                    "chat with the bridge. You can close this page.")


def _gone() -> web.Response:
    return page("Link used or expired", "This password link was already used or has expired. "
                "Send `login` in your chat with the bridge for a new one.", 410)


def origin_of(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
