"""A small OAuth 2.0 authorization server on loopback, for the test rig and the demo.

It plays a mail provider's sign-in service: an authorization endpoint that approves whoever the
"browser" authenticates as (HTTP Basic), a token endpoint (authorization code with PKCE S256,
refresh tokens that rotate), and an RFC 7662 introspection endpoint that Dovecot's `oauth2`
passdb asks about every bearer token. Tests can shorten token lifetimes and revoke grants.

Why hand-written: the maintained server libraries (authlib's AuthorizationServer) need a web
framework integration and a storage model; this rig needs only four endpoints over an in-memory
dict, served from a thread so Dovecot can reach it whatever the test's event loop is doing.

The demo runs it as a process of its own on a fixed port (devstack.issuer_service, started by
`python -m devstack up`), keeping its grants in a file so a signed-in mailbox stays signed in when
the demo is stopped and started again.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
import hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import os
from pathlib import Path
import secrets
import signal
import threading
import time
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

from .ports import LOOPBACK

CLIENT_ID = "letterbox-test"
CLIENT_SECRET = "letterbox-test-secret"
SCOPE = "mail"


class IssuerEndpoints(Protocol):
    """Where an issuer answers: this module's `OAuthIssuer` or an `IssuerAddress`."""

    @property
    def authorize_url(self) -> str: ...

    @property
    def token_url(self) -> str: ...

    @property
    def introspection_url(self) -> str: ...


@dataclass(frozen=True, slots=True)
class IssuerAddress:
    """The endpoints of an issuer running elsewhere (the demo's issuer process) at base `url`."""

    url: str

    @property
    def authorize_url(self) -> str:
        return self.url + "/authorize"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def introspection_url(self) -> str:
        return self.url + "/introspect"


@dataclass(slots=True)
class _Grant:
    """One user's consent: its current refresh token and the access tokens issued under it."""

    subject: str
    refresh_token: str
    revoked: bool = False


@dataclass(slots=True)
class _Code:
    subject: str
    redirect_uri: str
    challenge: str
    client_id: str


@dataclass(slots=True)
class _State:
    token_lifetime: float = 3600.0
    codes: dict[str, _Code] = field(default_factory=dict)
    grants: dict[str, _Grant] = field(default_factory=dict)  # refresh token -> grant
    access: dict[str, tuple[_Grant, float]] = field(default_factory=dict)  # token -> (grant, exp)
    refreshes: int = 0
    refused_refreshes: int = 0
    introspections: int = 0


class OAuthIssuer:
    """Start with `start()`; `url` is its base URL. Thread-safe controls for tests.

    `port` 0 picks a free one; with `state_file`, grants and access tokens are saved there on every
    change and read back at construction (the demo's issuer process).
    """

    def __init__(self, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET, *,
                 port: int = 0, state_file: Path | None = None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.port = port
        self.state_file = state_file
        self._state = _State()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if state_file is not None and state_file.is_file():
            self._restore(json.loads(state_file.read_text()))

    # ------------------------------------------------------------ lifecycle
    def _bind(self) -> ThreadingHTTPServer:
        issuer = self

        class Handler(_Handler):
            owner = issuer

        self._server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self._server.daemon_threads = True
        return self._server

    def start(self) -> None:
        """Serve from a thread of this process."""
        if self._server is not None:
            return
        server = self._bind()
        self._thread = threading.Thread(target=server.serve_forever, name="oauth-issuer",
                                        daemon=True)
        self._thread.start()

    def serve(self) -> None:
        """Serve in the calling thread until SIGTERM or SIGINT (the issuer as its own process)."""
        server = self._bind()

        def stop(signum: int, frame: object) -> None:
            # shutdown() waits for serve_forever(), which runs in this very thread
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            server.serve_forever()
        finally:
            server.server_close()
            self._server = None

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        assert self._server is not None, "issuer not started"
        return issuer_url(self._server.server_address[1])

    @property
    def authorize_url(self) -> str:
        return self.url + "/authorize"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def introspection_url(self) -> str:
        return self.url + "/introspect"

    # ------------------------------------------------------------ test controls
    def set_token_lifetime(self, seconds: float) -> None:
        """Access tokens issued from now on expire after `seconds`."""
        with self._lock:
            self._state.token_lifetime = seconds

    def revoke(self, subject: str) -> None:
        """Revoke every grant of `subject`: its refresh and access tokens stop working."""
        with self._lock:
            for grant in self._state.grants.values():
                if grant.subject == subject:
                    grant.revoked = True
            self._save()

    def refreshes(self) -> int:
        """Refresh-token grants answered with a new token."""
        with self._lock:
            return self._state.refreshes

    def refused_refreshes(self) -> int:
        """Refresh-token grants refused (revoked or unknown refresh token)."""
        with self._lock:
            return self._state.refused_refreshes

    def issue_for(self, subject: str) -> dict[str, object]:
        """A token response for `subject` without the browser dance (for client-level tests)."""
        with self._lock:
            return self._issue(_Grant(subject, secrets.token_urlsafe(24)))

    # ------------------------------------------------------------ the state file (under the lock)
    def _save(self) -> None:
        """Grants and live access tokens to `state_file` (atomically, owner-only)."""
        if self.state_file is None:
            return
        now = time.time()
        st = self._state
        data = {
            "grants": [{"subject": g.subject, "refresh_token": g.refresh_token,
                        "revoked": g.revoked} for g in st.grants.values()],
            "access": {token: [grant.refresh_token, exp] for token, (grant, exp)
                       in st.access.items() if exp > now and grant.refresh_token in st.grants},
        }
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        tmp.replace(self.state_file)

    def _restore(self, data: dict[str, Any]) -> None:
        st = self._state
        for item in data["grants"]:
            grant = _Grant(str(item["subject"]), str(item["refresh_token"]), bool(item["revoked"]))
            st.grants[grant.refresh_token] = grant
        for token, (refresh, exp) in data["access"].items():
            if refresh in st.grants:
                st.access[str(token)] = (st.grants[refresh], float(exp))

    # ------------------------------------------------------------ protocol (under the lock)
    def _issue(self, grant: _Grant) -> dict[str, object]:
        st = self._state
        st.grants[grant.refresh_token] = grant
        access = secrets.token_urlsafe(24)
        st.access[access] = (grant, time.time() + st.token_lifetime)
        self._save()
        return {"access_token": access, "token_type": "Bearer", "expires_in": st.token_lifetime,
                "refresh_token": grant.refresh_token, "scope": SCOPE}

    def authorize(self, query: dict[str, str], subject: str | None) -> tuple[int, dict[str, str]]:
        """(status, headers) for GET /authorize."""
        redirect = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or not redirect:
            return 400, {}
        if subject is None:
            return 401, {"WWW-Authenticate": 'Basic realm="issuer"'}
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            params = {"error": "invalid_request", "state": query.get("state", "")}
            return 302, {"Location": f"{redirect}?{urlencode(params)}"}
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._state.codes[code] = _Code(subject, redirect, query.get("code_challenge", ""),
                                            self.client_id)
        params = {"code": code, "state": query.get("state", "")}
        return 302, {"Location": f"{redirect}?{urlencode(params)}"}

    def token(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, object]]:
        client_id, client_secret = basic or (form.get("client_id", ""),
                                             form.get("client_secret", ""))
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return 401, {"error": "invalid_client"}
        with self._lock:
            st = self._state
            kind = form.get("grant_type")
            if kind == "authorization_code":
                code = st.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(
                    hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if (code is None or code.redirect_uri != form.get("redirect_uri")
                        or not verifier or challenge != code.challenge):
                    return 400, {"error": "invalid_grant"}
                return 200, self._issue(_Grant(code.subject, secrets.token_urlsafe(24)))
            if kind == "refresh_token":
                grant = st.grants.pop(form.get("refresh_token", ""), None)
                if grant is None or grant.revoked:
                    st.refused_refreshes += 1
                    self._save()
                    return 400, {"error": "invalid_grant",
                                 "error_description": "the refresh token was revoked"}
                st.refreshes += 1
                grant.refresh_token = secrets.token_urlsafe(24)  # rotation
                return 200, self._issue(grant)
        return 400, {"error": "unsupported_grant_type"}

    def introspect(self, token: str) -> dict[str, object]:
        with self._lock:
            self._state.introspections += 1
            found = self._state.access.get(token)
            if found is None or found[0].revoked or found[1] < time.time():
                return {"active": False}
            grant, exp = found
            return {"active": True, "username": grant.subject, "exp": int(exp),
                    "scope": SCOPE, "client_id": self.client_id}


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except ValueError:
        return None
    return user, password


class _Handler(BaseHTTPRequestHandler):
    owner: OAuthIssuer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tokens travel in these requests."""

    def _send(self, status: int, body: dict[str, object] | None = None,
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/authorize":
            self._send(404)
            return
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        basic = _basic(self.headers.get("Authorization", ""))
        status, headers = self.owner.authorize(query, basic[0] if basic else None)
        self._send(status, None, headers)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        form = self._form()
        if path == "/token":
            status, body = self.owner.token(form, _basic(self.headers.get("Authorization", "")))
            self._send(status, body)
        elif path == "/introspect":
            self._send(200, self.owner.introspect(form.get("token", "")))
        else:
            self._send(404)


def issuer_url(port: int) -> str:
    """The base URL of an issuer listening on loopback `port`."""
    return f"http://{LOOPBACK}:{port}"

