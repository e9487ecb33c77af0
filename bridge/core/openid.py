"""Matrix OpenID tokens as the provisioning API's per-user credential.

A web page acting for a user asks the user's homeserver for an OpenID token
(`POST /_matrix/client/v3/user/{userId}/openid/request_token`) and sends it as
`Authorization: Bearer openid:<token>`. The bridge learns whose token it is from the homeserver
(`GET /_matrix/federation/v1/openid/userinfo`, served by Synapse's `openid` listener resource).
Only the bridge's own homeserver is asked: a token of another server would make the bridge fetch
a URL a stranger chose, so users of other servers go through the shared secret.
"""

from __future__ import annotations

import logging

from aiohttp import ClientError, ClientSession, ClientTimeout

log = logging.getLogger("letterbox.provisioning")

PREFIX = "openid:"
USERINFO_PATH = "/_matrix/federation/v1/openid/userinfo"
_TIMEOUT = ClientTimeout(total=10)


class OpenIDRejected(Exception):
    """The token names nobody this bridge can vouch for; `reason` is safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def openid_user(session: ClientSession, homeserver_url: str, domain: str, token: str) -> str:
    """The Matrix ID the homeserver says `token` belongs to (a user of `domain`)."""
    if not token:
        raise OpenIDRejected("Empty OpenID token")
    try:
        async with session.get(homeserver_url.rstrip("/") + USERINFO_PATH,
                               params={"access_token": token}, timeout=_TIMEOUT) as resp:
            if resp.status in (401, 403):
                raise OpenIDRejected("The homeserver does not know this OpenID token (expired?)")
            if resp.status != 200:
                log.warning("OpenID userinfo answered HTTP %s (does the homeserver's listener "
                            "serve the 'openid' resource?)", resp.status)
                raise OpenIDRejected("The homeserver could not check the OpenID token")
            body = await resp.json(content_type=None)
    except (ClientError, TimeoutError, ValueError) as e:
        log.warning("OpenID userinfo request failed: %s", type(e).__name__)
        raise OpenIDRejected("The homeserver could not check the OpenID token") from None
    sub = body.get("sub") if isinstance(body, dict) else None
    if not isinstance(sub, str) or not sub.startswith("@") or sub.rpartition(":")[2] != domain:
        raise OpenIDRejected(f"OpenID tokens are accepted for users of {domain} only")
    return sub
