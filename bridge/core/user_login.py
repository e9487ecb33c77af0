"""A remote account of a user at run time: its client, state and Space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from ..db import UserLoginRow
from ..network import LoginAPI, LoginState, NetworkClient, UserLoginID

Capability = TypeVar("Capability")

# How each state reads to the user (notices and `list-logins`).
STATE_TEXT = {
    LoginState.CONNECTING: "connecting",
    LoginState.CONNECTED: "connected",
    LoginState.TRANSIENT_DISCONNECT: "disconnected, retrying",
    LoginState.BAD_CREDENTIALS: "the server refused the credentials; log in again",
    LoginState.LOGGED_OUT: "logged out",
    LoginState.UNKNOWN_ERROR: "error",
}


@dataclass(slots=True)
class UserLogin:
    row: UserLoginRow
    client: NetworkClient | None = None
    state_reason: str | None = None
    # A trouble notice was sent; the next CONNECTED is announced as a recovery.
    trouble_reported: bool = False

    def capability(self, kind: type[Capability]) -> Capability | None:
        """The connected client if it implements `kind` (an optional capability), else None."""
        client: object = self.client
        return client if isinstance(client, kind) else None

    @property
    def id(self) -> UserLoginID:
        return UserLoginID(self.row.id)

    @property
    def state(self) -> LoginState:
        return LoginState(self.row.state)

    def api(self) -> LoginAPI:
        return LoginAPI(
            login_id=self.id,
            user_mxid=self.row.user_mxid,
            remote_name=self.row.remote_name,
            metadata=self.row.metadata,
        )
