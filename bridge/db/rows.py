"""Typed access to mautrix's async_db: the row type (asyncpg.Record or sqlite3.Row), changed-row
counts, connections and transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeAlias, cast

from mautrix.util.async_db import Connection, Database

Record: TypeAlias = Mapping[str, Any]


def rowcount(result: object) -> int:
    """Rows changed by an INSERT/UPDATE: asyncpg returns a status ('INSERT 0 1'), aiosqlite a cursor."""
    if isinstance(result, str):
        return int(result.rsplit(" ", 1)[-1])
    return int(getattr(result, "rowcount", 0))


def connection(db: Database) -> AbstractAsyncContextManager[Connection]:
    """`async with connection(db) as conn:` — mautrix's `Database.acquire` is annotated in a way
    type checkers cannot read (an async generator declared to return a connection)."""
    acquire = cast(Callable[[], AbstractAsyncContextManager[Connection]], db.acquire)
    return acquire()


@asynccontextmanager
async def transaction(db: Database) -> AsyncIterator[Connection]:
    """`async with transaction(db) as conn:` — one connection, one database transaction."""
    async with connection(db) as conn:
        begin = cast(Callable[[], AbstractAsyncContextManager[None]], conn.transaction)
        async with begin():
            yield conn
