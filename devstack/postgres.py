"""PostgreSQL for tests and the demo: the local server on 5432, or a private cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
import os
from pathlib import Path
import re
import shutil
import signal
import subprocess
from typing import TypeVar

import asyncpg

from .errors import DevstackError, MissingBinaryError
from .ports import LOOPBACK, free_port, port_accepts
from .process import ServerProcess

SYSTEM_PORT = 5432
_T = TypeVar("_T")
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass
class PostgresServer:
    """A reachable PostgreSQL: `dsn` points at its `postgres` database (user postgres, trust).

    `process` is set only for a private cluster started by devstack; stop() stops it.
    """

    dsn: str
    port: int
    process: ServerProcess | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop a private cluster (idempotent); a system server is left alone."""
        if self.process is not None:
            self.process.stop(timeout=15)


def _dsn(port: int, database: str = "postgres") -> str:
    return f"postgresql://postgres@{LOOPBACK}:{port}/{database}"


def _run(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion in a worker thread with its own event loop.

    The callers are sync (fixtures, CLI); a worker thread keeps pytest-asyncio's loop untouched.
    """

    async def main() -> _T:
        return await factory()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise MissingBinaryError("PostgreSQL (initdb)")
    return found[-1].parent


def ensure_postgres(
    root: Path, *, port: int | None = None, use_system: bool = True
) -> PostgresServer:
    """A PostgreSQL to use: the server on 127.0.0.1:5432 if it accepts connections (and
    `use_system`), else a private cluster under `root/postgres` on `port` (default: free)."""
    if use_system and port_accepts(SYSTEM_PORT):
        server = PostgresServer(_dsn(SYSTEM_PORT), SYSTEM_PORT)
        try:
            _run(lambda: _fetch_version(server.dsn))
        except (OSError, asyncpg.PostgresError) as exc:
            raise DevstackError(
                f"PostgreSQL on {LOOPBACK}:{SYSTEM_PORT} does not accept user postgres "
                f"without a password: {exc}"
            ) from exc
        return server
    return _private_cluster(Path(root).resolve() / "postgres", port or free_port())


async def _fetch_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _cluster_process(directory: Path) -> ServerProcess:
    return ServerProcess(
        "postgres",
        directory / "postgres.pid",
        marker=str(directory / "data"),
        logs=[directory / "logs" / "postgres.log"],
        stop_signal=signal.SIGINT,  # "fast" shutdown: does not wait for clients to leave
    )


def stop_private_postgres(root: Path) -> None:
    """Stop a private cluster that ensure_postgres(root) started (no-op if none runs)."""
    _cluster_process(Path(root).resolve() / "postgres").stop(timeout=15)


def _private_cluster(directory: Path, port: int) -> PostgresServer:
    bin_dir = _bin_dir()
    data, sockets, logs = directory / "data", directory / "sockets", directory / "logs"
    run_as = "postgres" if os.geteuid() == 0 else None
    for d in (directory, sockets, logs):
        d.mkdir(parents=True, exist_ok=True)
        if run_as:
            shutil.chown(d, run_as, run_as)
    process = _cluster_process(directory)
    server = PostgresServer(_dsn(port), port, process)
    if process.load_pid():
        return server
    if not (data / "PG_VERSION").is_file():
        res = subprocess.run(
            [
                bin_dir / "initdb",
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            user=run_as,
            group=run_as,
            extra_groups=[] if run_as else None,
        )
        if res.returncode != 0:
            raise process.fail(f"initdb exited {res.returncode}: {res.stdout}{res.stderr}")
    process.spawn(
        [
            bin_dir / "postgres",
            "-D",
            data,
            "-p",
            str(port),
            "-k",
            sockets,
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ],
        logs / "postgres.log",
        user=run_as,
    )
    try:
        process.wait_ready(lambda: _accepts_queries(server.dsn), 30, "accepting connections")
    except BaseException:
        process.stop()
        raise
    return server


def _accepts_queries(dsn: str) -> bool:
    try:
        _run(lambda: _fetch_version(dsn))
        return True
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False


def _quoted(name: str) -> str:
    if not _DB_NAME.match(name):
        raise DevstackError(f"unsupported database name {name!r}")
    return f'"{name}"'


def database_dsn(dsn: str, name: str) -> str:
    """`dsn` with its database replaced by `name`."""
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


def create_database(dsn: str, name: str) -> str:
    """Create database `name` (dropping an old one of that name); returns its DSN."""
    quoted = _quoted(name)

    async def go() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {quoted} ENCODING 'UTF8' TEMPLATE template0")
        finally:
            await conn.close()

    _run(go)
    return database_dsn(dsn, name)


def ensure_database(dsn: str, name: str) -> str:
    """Create database `name` unless it exists (keeps data); returns its DSN."""
    quoted = _quoted(name)

    async def go() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f"CREATE DATABASE {quoted} ENCODING 'UTF8' TEMPLATE template0")
        finally:
            await conn.close()

    _run(go)
    return database_dsn(dsn, name)


def drop_database(dsn: str, name: str) -> None:
    """Drop database `name` if it exists, disconnecting its sessions."""
    quoted = _quoted(name)

    async def go() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        finally:
            await conn.close()

    _run(go)
