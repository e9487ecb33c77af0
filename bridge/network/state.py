"""Login states reported by a network client, surfaced to the user as notices."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class LoginState(str, Enum):
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    TRANSIENT_DISCONNECT = "TRANSIENT_DISCONNECT"
    BAD_CREDENTIALS = "BAD_CREDENTIALS"
    LOGGED_OUT = "LOGGED_OUT"
    UNKNOWN_ERROR = "UNKNOWN_ERROR"

    @property
    def is_error(self) -> bool:
        return self in (
            LoginState.TRANSIENT_DISCONNECT,
            LoginState.BAD_CREDENTIALS,
            LoginState.UNKNOWN_ERROR,
        )


@dataclass(frozen=True, slots=True)
class LoginStateEvent:
    state: LoginState
    reason: str | None = None
