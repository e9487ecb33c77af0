"""Leases of several worker processes sharing one PostgreSQL database.

A worker holds a lease per Matrix user (all of that user's logins and rooms) and possibly the
coordinator lease (rooms no user owns). A lease is valid until `expires_at`, in milliseconds of
the database server's clock; claiming one is a single statement that takes a row only if it
has no lease or an expired one, so two workers never both get it.
"""

from __future__ import annotations

from mautrix.util.async_db import Database

from .rows import rowcount

#: The subject of the coordinator lease (not a user ID: those start with "@").
COORDINATOR = "~coordinator"

#: SQL: the database server's clock in milliseconds.
NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_NOW = NOW_MS


class LeaseTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def heartbeat(self, worker: str) -> None:
        await self.db.execute(
            f"""INSERT INTO worker (id, seen_at) VALUES ($1, {_NOW})
                ON CONFLICT (id) DO UPDATE SET seen_at=excluded.seen_at""",
            worker,
        )

    async def live_workers(self, within_ms: int) -> int:
        """Workers seen within the last `within_ms` (at least 1: the caller is one)."""
        count = await self.db.fetchval(
            f"SELECT count(*) FROM worker WHERE seen_at > {_NOW} - $1", within_ms
        )
        return max(1, int(count or 0))

    async def leave(self, worker: str) -> None:
        """A worker that stops cleanly: its leases are free at once, its heartbeat gone."""
        await self.db.execute("DELETE FROM worker_lease WHERE worker=$1", worker)
        await self.db.execute("DELETE FROM worker WHERE id=$1", worker)

    async def renew(self, worker: str, ttl_ms: int) -> set[str]:
        """Extend every lease the worker still holds; returns their subjects (a lease another
        worker took after it expired is not among them)."""
        rows = await self.db.fetch(
            f"""UPDATE worker_lease SET expires_at = {_NOW} + $2
                WHERE worker=$1 AND expires_at > {_NOW} RETURNING subject""",
            worker, ttl_ms,
        )
        return {r["subject"] for r in rows}

    async def users(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM bridge_user") or 0)

    async def claimable(self) -> int:
        """Users whose lease is missing or expired."""
        return int(await self.db.fetchval(
            f"""SELECT count(*) FROM bridge_user u LEFT JOIN worker_lease w ON w.subject = u.mxid
                WHERE w.subject IS NULL OR w.expires_at <= {_NOW}"""
        ) or 0)

    async def claim_users(self, worker: str, ttl_ms: int, limit: int) -> list[str]:
        """Take up to `limit` users without a valid lease; returns the users taken."""
        if limit <= 0:
            return []
        rows = await self.db.fetch(
            f"""INSERT INTO worker_lease (subject, worker, expires_at)
                SELECT u.mxid, $1, {_NOW} + $2 FROM bridge_user u
                LEFT JOIN worker_lease w ON w.subject = u.mxid
                WHERE w.subject IS NULL OR w.expires_at <= {_NOW}
                ORDER BY u.mxid LIMIT $3
                ON CONFLICT (subject) DO UPDATE
                SET worker=excluded.worker, expires_at=excluded.expires_at
                WHERE worker_lease.expires_at <= {_NOW}
                RETURNING subject""",
            worker, ttl_ms, limit,
        )
        return [r["subject"] for r in rows]

    async def claim(self, worker: str, subject: str, ttl_ms: int) -> bool:
        """Take one subject if nobody else holds it (renews it if this worker does)."""
        row = await self.db.fetchval(
            f"""INSERT INTO worker_lease (subject, worker, expires_at) VALUES ($2, $1, {_NOW} + $3)
                ON CONFLICT (subject) DO UPDATE
                SET worker=excluded.worker, expires_at=excluded.expires_at
                WHERE worker_lease.expires_at <= {_NOW} OR worker_lease.worker = excluded.worker
                RETURNING subject""",
            worker, subject, ttl_ms,
        )
        return row is not None

    async def release(self, worker: str, subjects: list[str]) -> int:
        """Give up leases (only after the worker stopped acting for them)."""
        if not subjects:
            return 0
        return rowcount(await self.db.execute(
            "DELETE FROM worker_lease WHERE worker=$1 AND subject = ANY($2::text[])",
            worker, subjects,
        ))
