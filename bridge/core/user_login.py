"""A remote account of a user at run time: its client, state and Space."""

from __future__ import annotations

from dataclasses import dataclass

from ..db import UserLoginRow
from ..network import LoginAPI, LoginState, NetworkClient, UserLoginID


@dataclass(slots=True)
class UserLogin:
    row: UserLoginRow
    client: NetworkClient | None = None
    state_reason: str | None = None
    # A trouble notice was sent; the next CONNECTED is announced as a recovery.
    trouble_reported: bool = False

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
