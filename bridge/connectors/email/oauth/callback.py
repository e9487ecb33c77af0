"""The page the provider sends the browser back to: it hands the answer to the waiting login.

It shows the result of the login once the mailbox servers accepted (or refused) the sign-in.
"""

from __future__ import annotations

import asyncio
import html

from aiohttp import web

from .authorize import Authorizations

#: how long the page waits for the login to finish before saying "see Matrix"
RESULT_WAIT_S = 60.0


def page(title: str, text: str, status: int = 200) -> web.Response:
    body = (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            "<meta name=viewport content='width=device-width'></head>"
            f"<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>")
    return web.Response(status=status, text=body, content_type="text/html")


class CallbackPage:
    def __init__(self, authorizations: Authorizations) -> None:
        self.authorizations = authorizations

    async def handle(self, request: web.Request) -> web.Response:
        pending = self.authorizations.find(request.query.get("state", ""))
        if pending is None or pending.callback.done():
            return page("Link used or expired",
                        "This sign-in link was already used or has expired. Send `login` in your "
                        "chat with the bridge for a new one.", 400)
        pending.callback.set_result({"redirect": request.query_string})
        try:
            text = await asyncio.wait_for(asyncio.shield(pending.outcome), RESULT_WAIT_S)
        except TimeoutError:
            text = "Letterbox is still checking your mailbox; the result will appear in Matrix."
        return page("Letterbox", text)
