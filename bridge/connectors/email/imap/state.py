"""Connection states the sync engine reports."""

from __future__ import annotations

from enum import Enum
from typing import Protocol


class SyncState(str, Enum):
    """Same names and values as the bridge's LoginState, so mapping is `LoginState(s.value)`."""

    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    TRANSIENT_DISCONNECT = "TRANSIENT_DISCONNECT"
    BAD_CREDENTIALS = "BAD_CREDENTIALS"


class StateListener(Protocol):
    """Told about state changes; `reason` is user-facing text (None when all is well).

    Called only when the (state, reason) pair changes. Must not block for long.
    """

    async def on_state(self, state: SyncState, reason: str | None) -> None: ...
