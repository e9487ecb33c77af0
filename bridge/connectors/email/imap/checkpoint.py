"""Per-folder sync position and the store that keeps it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Every message of the folder with UID <= `last_uid` (under `uidvalidity`) is handled."""

    uidvalidity: int
    last_uid: int


class CheckpointStore(Protocol):
    """Durable storage for one account's checkpoints, keyed by folder name."""

    async def get(self, folder: str) -> Checkpoint | None: ...

    async def set(self, folder: str, checkpoint: Checkpoint) -> None: ...
