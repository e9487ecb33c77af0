"""Everything a bridge database holds, as text: to prove that something is NOT in it."""

from __future__ import annotations

from pathlib import Path
import sqlite3

import asyncpg
from yarl import URL


def sqlite_files(db_url: str) -> list[Path]:
    """The database file and the side files SQLite keeps beside it."""
    path = Path(URL(db_url).path)
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


async def dump_database(db_url: str) -> bytes:
    """Every row of every table (and for SQLite also the raw bytes of its files, free pages
    and the write-ahead log included)."""
    if db_url.startswith("sqlite:"):
        con = sqlite3.connect(URL(db_url).path)
        try:
            text = "\n".join(con.iterdump()).encode()
        finally:
            con.close()
        return text + b"".join(p.read_bytes() for p in sqlite_files(db_url))
    con = await asyncpg.connect(db_url)
    try:
        tables = await con.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public'")
        rows = []
        for t in tables:
            name = t["table_name"]
            rows += [r[0] for r in await con.fetch(f'SELECT row_to_json(t)::text FROM "{name}" t')]
        assert tables, "no tables: wrong database?"
        return "\n".join(rows).encode()
    finally:
        await con.close()
