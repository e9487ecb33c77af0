"""OAuth 2.0 bearer tokens on IMAP and SMTP: SASL OAUTHBEARER (RFC 7628) and XOAUTH2.

The IMAP and SMTP clients ask a `BearerSource` for a current access token each time they log in,
so a token refreshed meanwhile is used by the next connection.

Why hand-written: the two initial client responses are one line each; aioimaplib's XOAUTH2 helper
waits forever when the server answers a failure with a challenge, and aiosmtplib has no
OAUTHBEARER, so both clients send these strings themselves.
"""

from __future__ import annotations

import base64
from typing import Protocol

OAUTHBEARER = "OAUTHBEARER"
XOAUTH2 = "XOAUTH2"
#: preferred first: the standard one, then Google's and Microsoft's older variant
BEARER_MECHANISMS: tuple[str, ...] = (OAUTHBEARER, XOAUTH2)


class BearerUnavailable(Exception):
    """No access token can be had. `permanent`: the grant is gone (revoked, expired) and the user
    must sign in again; otherwise the provider could not be reached and a retry may work."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class BearerSource(Protocol):
    """Where a login's access tokens come from (refreshing them as needed)."""

    async def access_token(self) -> str:
        """A token valid for at least the next minute; raises `BearerUnavailable`."""
        ...


def choose_mechanism(offered: set[str], allowed: tuple[str, ...] = BEARER_MECHANISMS) -> str | None:
    """The first of `allowed` that the server offers (`offered`: upper-case names)."""
    return next((m for m in allowed if m in offered), None)


def initial_response(mechanism: str, user: str, token: str) -> str:
    """The base64 client-first message of `mechanism` for `user` with bearer `token`."""
    if any(c in user + token for c in "\x00\x01\r\n"):
        raise BearerUnavailable("the user name or token contains a forbidden character",
                                permanent=True)
    if mechanism == OAUTHBEARER:
        # gs2 header (no channel binding, authzid = user; ',' and '=' in it are escaped)
        authzid = user.replace("=", "=3D").replace(",", "=2C")
        message = f"n,a={authzid},\x01auth=Bearer {token}\x01\x01"
    elif mechanism == XOAUTH2:
        message = f"user={user}\x01auth=Bearer {token}\x01\x01"
    else:
        raise ValueError(f"not a bearer mechanism: {mechanism}")
    return base64.b64encode(message.encode("utf-8")).decode("ascii")


def failure_reply(mechanism: str) -> str:
    """What the client sends after the server's error challenge, to get the final NO/535."""
    # RFC 7628 3.2.3: a single %x01; XOAUTH2: an empty response
    return base64.b64encode(b"\x01").decode("ascii") if mechanism == OAUTHBEARER else ""
