"""Keeps one OAuth login signed in.

The access token is renewed in the background a little before it expires, so a new IMAP or SMTP
connection never waits for the provider and never finds an expired token. When the provider says
the grant is gone (revoked, expired, password changed), the login is reported as bad credentials
with a new sign-in link; the provider's answer to that link, at the public callback, puts new
tokens in place and restarts the mailbox. A provider that cannot be reached is retried with a
growing pause, never in a tight loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
import logging
import time
from typing import TYPE_CHECKING

from ..sasl import BearerUnavailable
from .authorize import AuthorizationRefused, PendingAuthorization, parse_answer
from .tokens import OAuthTokens, exchange_code

if TYPE_CHECKING:
    from ..connector import EmailConnector

log = logging.getLogger("letterbox.email.oauth")

RETRY_FIRST_S = 30.0
RETRY_MAX_S = 600.0


class SignInKeeper:
    """`on_gone(reason)`: the grant is gone (reason includes what to do); `on_signed_in()`: a new
    sign-in replaced it."""

    def __init__(self, connector: EmailConnector, address: str, tokens: OAuthTokens,
                 on_gone: Callable[[str], Awaitable[None]],
                 on_signed_in: Callable[[], Awaitable[None]]) -> None:
        self.connector = connector
        self.address = address
        self.tokens = tokens
        self._on_gone = on_gone
        self._on_signed_in = on_signed_in
        self._renewer: asyncio.Task[None] | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._pending: PendingAuthorization | None = None

    def start(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew(), name=f"oauth-renew-{self.address}")

    async def stop(self) -> None:
        """Stop renewing and forget an open sign-in link (the bridge is stopping)."""
        for task in (self._renewer, self._waiter):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self._renewer = self._waiter = None
        if self._pending is not None:
            self.connector.authorizations.drop(self._pending)
            self._pending = None

    # ---------------------------------------------------------------- renewal
    async def _renew(self) -> None:
        pause = RETRY_FIRST_S
        while True:
            await asyncio.sleep(max(0.0, self.tokens.tokens.refresh_at - time.time()))
            try:
                await self.tokens.refresh_if_due()
                pause = RETRY_FIRST_S
            except BearerUnavailable as exc:
                if exc.permanent:
                    log.warning("The sign-in of %s is gone: %s", self.address, exc.reason)
                    await self._on_gone(f"{exc.reason}. {self.sign_in_again()}")
                    return
                log.warning("Could not renew the token of %s (%s); retrying in %d s",
                            self.address, exc.reason, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)

    # ---------------------------------------------------------------- signing in again
    def sign_in_again(self) -> str:
        """What the user is told to do: a sign-in link (the same one while it is open)."""
        callback = self.connector.oauth_callback_url()
        if callback is None:
            return "Send `login` and sign in again."
        pending = self._pending
        if pending is None or self.connector.authorizations.find(pending.state) is not pending:
            pending = self.connector.authorizations.begin(self.tokens.provider, callback,
                                                          self.address)
            self._pending = pending
            if self._waiter is not None:
                self._waiter.cancel()
            self._waiter = asyncio.create_task(self._await_sign_in(pending),
                                               name=f"oauth-sign-in-{self.address}")
        # delimited (RFC 3986 appendix C): the notice puts the reason in parentheses
        return f"Sign in again: <{pending.url}>"

    async def _await_sign_in(self, pending: PendingAuthorization) -> None:
        try:
            values = await pending.callback
        except asyncio.CancelledError:
            return
        self._pending = self._waiter = None  # a new link made from here must not cancel this
        provider = self.tokens.provider
        try:
            answer = parse_answer(values.get("redirect", ""))
            if self.connector.authorizations.claim(answer.state) is not pending:
                raise AuthorizationRefused("this sign-in link was already used")
            new = await exchange_code(provider, pending.redirect_uri, answer.code,
                                      pending.verifier)
        except (AuthorizationRefused, BearerUnavailable) as exc:
            pending.finish(f"Signing in failed: {exc.reason}")
            await self._on_gone(f"signing in again failed ({exc.reason}). {self.sign_in_again()}")
            return
        await self.tokens.replace(new)
        pending.finish(f"Signed in again as {self.address}. Your mail is back in Matrix.")
        log.info("%s signed in again with %s", self.address, provider.name)
        await self._on_signed_in()
        self.start()
