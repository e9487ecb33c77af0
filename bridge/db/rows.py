"""The row type returned by mautrix's async_db (asyncpg.Record or sqlite3.Row)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

Record: TypeAlias = Mapping[str, Any]


def rowcount(result: object) -> int:
    """Rows changed by an INSERT/UPDATE: asyncpg returns a status ('INSERT 0 1'), aiosqlite a cursor."""
    if isinstance(result, str):
        return int(result.rsplit(" ", 1)[-1])
    return int(getattr(result, "rowcount", 0))
