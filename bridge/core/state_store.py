"""In-memory Matrix state cache for the appservice API (membership, power levels, registration)."""

from __future__ import annotations

from mautrix.appservice.state_store import ASStateStore
from mautrix.client.state_store import MemoryStateStore


class StateStore(ASStateStore, MemoryStateStore):
    """Rebuilt from the homeserver after a restart; joins and registrations are idempotent."""

    def __init__(self) -> None:
        ASStateStore.__init__(self)
        MemoryStateStore.__init__(self)
