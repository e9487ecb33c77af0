"""Sign-in links and their one-time state.

Each link carries a random `state` and a PKCE challenge (authlib builds the URL). The state is
kept here for `LINK_TTL_S`; the provider's answer, whether it reaches the bridge's public
callback or is pasted into the chat, is accepted once and only for the attempt that made it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
import secrets
import time
from urllib.parse import parse_qs, urlsplit

from .providers import OAuthProvider
from .tokens import oauth_client

#: how long a sign-in link stays usable
LINK_TTL_S = 600.0
CALLBACK_PATH = "/oauth/callback"


class AuthorizationRefused(Exception):
    """The provider's answer is unusable: denied, malformed, or not for this attempt."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True, eq=False)
class PendingAuthorization:
    provider: OAuthProvider
    state: str
    verifier: str
    redirect_uri: str
    url: str
    expires_at: float
    #: the provider's answer when it came through the public callback (a query string)
    callback: asyncio.Future[dict[str, str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    #: what the callback page shows: set once the login finished or failed
    outcome: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())

    def finish(self, text: str) -> None:
        if not self.outcome.done():
            self.outcome.set_result(text)


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    code: str
    state: str


def parse_answer(text: str) -> ProviderAnswer:
    """The code and state from the address the provider redirected to (or its query string)."""
    text = text.strip().strip("<>")
    query = urlsplit(text).query if "?" in text else text
    params = {k: v[0] for k, v in parse_qs(query).items()}
    if "error" in params:
        detail = params.get("error_description") or params["error"]
        raise AuthorizationRefused(f"the provider did not grant access ({detail[:200]})")
    if not params.get("code") or not params.get("state"):
        raise AuthorizationRefused(
            "that is not the address the sign-in ended on (it has no code and state)")
    return ProviderAnswer(params["code"], params["state"])


class Authorizations:
    """The sign-in attempts in progress, by state."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingAuthorization] = {}

    def begin(self, provider: OAuthProvider, redirect_uri: str, login_hint: str) -> PendingAuthorization:
        self._expire()
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(24)
        client = oauth_client(provider, redirect_uri)
        url, _ = client.create_authorization_url(
            provider.authorize_url, state=state, code_verifier=verifier, login_hint=login_hint,
            **provider.authorize_params)
        pending = PendingAuthorization(provider, state, verifier, redirect_uri, url,
                                       time.monotonic() + LINK_TTL_S)
        self._pending[state] = pending
        return pending

    def find(self, state: str) -> PendingAuthorization | None:
        """The attempt `state` belongs to while it is still open (not claimed, not expired)."""
        self._expire()
        return self._pending.get(state)

    def claim(self, state: str) -> PendingAuthorization | None:
        """Take the attempt out: a state is good for one answer only."""
        self._expire()
        return self._pending.pop(state, None)

    def drop(self, pending: PendingAuthorization) -> None:
        if self._pending.get(pending.state) is pending:
            del self._pending[pending.state]
        if not pending.callback.done():
            pending.callback.cancel()
        pending.finish("This sign-in was cancelled.")

    def _expire(self) -> None:
        now = time.monotonic()
        for state, pending in list(self._pending.items()):
            if pending.expires_at < now:
                del self._pending[state]
                if not pending.callback.done():
                    pending.callback.cancel()
                pending.finish("This sign-in link has expired.")
