"""Access and refresh tokens of one OAuth login: exchange, refresh before expiry, sealing.

The HTTP exchanges with the provider are authlib's (authorization code with PKCE, refresh);
this module decides when to refresh and what a failure means for the user. Tokens are only ever
stored sealed by the bridge's secret box and never appear in a log line or an error text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import json
import logging
import time
from typing import Any

from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
import httpx2

from ..sasl import BearerUnavailable
from .providers import OAuthProvider

log = logging.getLogger("letterbox.email.oauth")

#: a token is renewed this long before it expires (at most; a quarter of short lifetimes)
REFRESH_MARGIN_S = 300.0
#: the provider's token endpoint must answer within this time
HTTP_TIMEOUT_S = 20.0
# provider errors after which only signing in again helps (RFC 6749 5.2)
_GRANT_GONE = {"invalid_grant", "unauthorized_client", "invalid_client", "invalid_scope"}


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    refresh_token: str
    expires_at: float
    lifetime: float

    @property
    def refresh_at(self) -> float:
        return self.expires_at - min(REFRESH_MARGIN_S, self.lifetime / 4)

    def seal(self, seal: Callable[[str], str]) -> str:
        return seal(json.dumps({"access_token": self.access_token,
                                "refresh_token": self.refresh_token,
                                "expires_at": self.expires_at, "lifetime": self.lifetime}))

    @classmethod
    def open(cls, sealed: str, open_: Callable[[str], str]) -> TokenSet:
        data = json.loads(open_(sealed))
        return cls(str(data["access_token"]), str(data["refresh_token"]),
                   float(data["expires_at"]), float(data["lifetime"]))

    @classmethod
    def from_response(cls, token: dict[str, Any], previous_refresh: str = "") -> TokenSet:
        lifetime = float(token.get("expires_in") or 3600)
        refresh = str(token.get("refresh_token") or previous_refresh)
        if not token.get("access_token") or not refresh:
            raise BearerUnavailable(
                "the provider gave no refresh token (the bridge must be allowed offline access)",
                permanent=True)
        return cls(str(token["access_token"]), refresh, time.time() + lifetime, lifetime)


def oauth_client(provider: OAuthProvider, redirect_uri: str | None = None) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=provider.client_id, client_secret=provider.client_secret,
        token_endpoint_auth_method="client_secret_post" if provider.client_secret else "none",
        scope=" ".join(provider.scopes), redirect_uri=redirect_uri,
        code_challenge_method="S256", timeout=HTTP_TIMEOUT_S,
    )


def _failure(provider: OAuthProvider, exc: Exception) -> BearerUnavailable:
    if isinstance(exc, OAuthError):
        if exc.error in _GRANT_GONE:
            return BearerUnavailable(
                f"{provider.name} no longer accepts this sign-in ({exc.error}); it was revoked, "
                "expired or its password changed", permanent=True)
        return BearerUnavailable(f"{provider.name} refused the token request ({exc.error})",
                                 permanent=False)
    return BearerUnavailable(f"{provider.name} could not be reached ({type(exc).__name__})",
                             permanent=False)


async def exchange_code(provider: OAuthProvider, redirect_uri: str, code: str,
                        verifier: str) -> TokenSet:
    """Trade an authorization code (with its PKCE verifier) for tokens."""
    async with oauth_client(provider, redirect_uri) as client:
        try:
            token = await client.fetch_token(provider.token_url, code=code,
                                             code_verifier=verifier)
        except (OAuthError, httpx2.HTTPError, OSError, ValueError) as exc:
            raise _failure(provider, exc) from None
    return TokenSet.from_response(dict(token))


async def refresh(provider: OAuthProvider, tokens: TokenSet) -> TokenSet:
    async with oauth_client(provider) as client:
        try:
            token = await client.refresh_token(provider.token_url,
                                               refresh_token=tokens.refresh_token)
        except (OAuthError, httpx2.HTTPError, OSError, ValueError) as exc:
            raise _failure(provider, exc) from None
    return TokenSet.from_response(dict(token), tokens.refresh_token)


class OAuthTokens:
    """A login's BearerSource: hands out the access token, refreshing it first when due.

    `save` stores a new token set (sealed) before it is used, so a refresh token the provider
    rotated is never lost to a crash.
    """

    def __init__(self, provider: OAuthProvider, tokens: TokenSet,
                 save: Callable[[TokenSet], Awaitable[None]]) -> None:
        self.provider = provider
        self.tokens = tokens
        self._save = save
        self._lock = asyncio.Lock()
        # once the provider said the grant is gone, it is not asked again until a new sign-in
        self._gone: BearerUnavailable | None = None

    @property
    def revoked(self) -> bool:
        return self._gone is not None

    async def access_token(self) -> str:
        async with self._lock:
            if time.time() >= self.tokens.refresh_at:
                await self._refresh()
            return self.tokens.access_token

    async def refresh_if_due(self) -> None:
        await self.access_token()

    async def replace(self, tokens: TokenSet) -> None:
        """Tokens of a new sign-in: stored, and the grant counts as alive again."""
        async with self._lock:
            await self._save(tokens)
            self.tokens = tokens
            self._gone = None

    async def _refresh(self) -> None:
        if self._gone is not None:
            raise self._gone
        try:
            new = await refresh(self.provider, self.tokens)
        except BearerUnavailable as exc:
            if exc.permanent:
                self._gone = exc
            raise
        await self._save(new)
        self.tokens = new
        log.debug("Renewed the %s access token (valid %d s)", self.provider.name, new.lifetime)
