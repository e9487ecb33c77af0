from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Database


@dataclass(slots=True)
class GhostRow:
    id: str
    name: str
    name_set: bool


class GhostTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, ghost_id: str) -> GhostRow | None:
        row = await self.db.fetchrow("SELECT id, name, name_set FROM ghost WHERE id=$1", ghost_id)
        return GhostRow(row["id"], row["name"], bool(row["name_set"])) if row else None

    async def upsert(self, ghost: GhostRow) -> None:
        await self.db.execute(
            """INSERT INTO ghost (id, name, name_set) VALUES ($1, $2, $3)
               ON CONFLICT (id) DO UPDATE SET name=excluded.name, name_set=excluded.name_set""",
            ghost.id, ghost.name, ghost.name_set,
        )
