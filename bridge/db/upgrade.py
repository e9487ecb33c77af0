"""Numbered upgrade steps of the core's tables (version table `core_version`)."""

from __future__ import annotations

from mautrix.util.async_db import Connection, Scheme, UpgradeTable

upgrade_table = UpgradeTable(version_table_name="core_version", database_name="Letterbox core")


@upgrade_table.register(description="Initial core schema")
async def upgrade_v1(conn: Connection, scheme: Scheme) -> None:
    serial = "BIGSERIAL" if scheme in (Scheme.POSTGRES, Scheme.COCKROACH) else "INTEGER"
    await conn.execute(
        """CREATE TABLE bridge_user (
            mxid            TEXT PRIMARY KEY,
            management_room TEXT
        )"""
    )
    await conn.execute(
        """CREATE TABLE user_login (
            id          TEXT PRIMARY KEY,
            user_mxid   TEXT NOT NULL REFERENCES bridge_user(mxid) ON DELETE CASCADE,
            remote_name TEXT NOT NULL,
            space_room  TEXT,
            state       TEXT NOT NULL DEFAULT 'CONNECTING',
            metadata    TEXT NOT NULL DEFAULT '{}'
        )"""
    )
    await conn.execute("CREATE INDEX user_login_user_idx ON user_login (user_mxid)")
    await conn.execute(
        """CREATE TABLE ghost (
            id       TEXT PRIMARY KEY,
            name     TEXT NOT NULL DEFAULT '',
            name_set BOOLEAN NOT NULL DEFAULT false
        )"""
    )
    await conn.execute(
        """CREATE TABLE portal (
            id        TEXT NOT NULL,
            receiver  TEXT NOT NULL REFERENCES user_login(id) ON DELETE CASCADE,
            mxid      TEXT UNIQUE,
            name      TEXT NOT NULL DEFAULT '',
            topic     TEXT NOT NULL DEFAULT '',
            is_direct BOOLEAN NOT NULL DEFAULT false,
            in_space  BOOLEAN NOT NULL DEFAULT false,
            metadata  TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (id, receiver)
        )"""
    )
    await conn.execute(
        """CREATE TABLE message (
            receiver    TEXT NOT NULL,
            portal_id   TEXT NOT NULL,
            id          TEXT NOT NULL,
            part_id     TEXT NOT NULL DEFAULT '',
            mxid        TEXT NOT NULL,
            room_id     TEXT NOT NULL,
            sender_id   TEXT NOT NULL,
            timestamp   BIGINT NOT NULL,
            thread_root TEXT,
            PRIMARY KEY (receiver, id, part_id),
            FOREIGN KEY (portal_id, receiver) REFERENCES portal(id, receiver) ON DELETE CASCADE
        )"""
    )
    await conn.execute("CREATE INDEX message_mxid_idx ON message (mxid)")
    # Appservice intake: a transaction is acknowledged only after its events are stored here.
    await conn.execute(
        """CREATE TABLE as_transaction (
            txn_id      TEXT PRIMARY KEY,
            received_at BIGINT NOT NULL
        )"""
    )
    await conn.execute(
        f"""CREATE TABLE matrix_event_inbox (
            seq         {serial} PRIMARY KEY,
            event_id    TEXT NOT NULL UNIQUE,
            room_id     TEXT,
            event_json  TEXT NOT NULL,
            done        BOOLEAN NOT NULL DEFAULT false,
            received_at BIGINT NOT NULL
        )"""
    )
    await conn.execute("CREATE INDEX matrix_event_inbox_pending_idx ON matrix_event_inbox (done, seq)")


@upgrade_table.register(description="Every private chat with the bot; rooms of logged-out accounts")
async def upgrade_v2(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(
        """CREATE TABLE management_room (
            room_id   TEXT PRIMARY KEY,
            user_mxid TEXT NOT NULL,
            added_at  BIGINT NOT NULL
        )"""
    )
    await conn.execute("CREATE INDEX management_room_user_idx ON management_room (user_mxid)")
    await conn.execute(
        """INSERT INTO management_room (room_id, user_mxid, added_at)
           SELECT management_room, mxid, 0 FROM bridge_user WHERE management_room IS NOT NULL"""
    )
    await conn.execute(
        """CREATE TABLE retired_portal (
            room_id     TEXT PRIMARY KEY,
            user_mxid   TEXT NOT NULL,
            remote_name TEXT NOT NULL
        )"""
    )


@upgrade_table.register(description="Parts of remote messages being sent (exactly-once delivery)")
async def upgrade_v3(conn: Connection, scheme: Scheme) -> None:
    # A row per part that is about to be sent to Matrix, written (all parts at once) before the
    # first send; replaced by its `message` row in the same transaction that records the event.
    await conn.execute(
        """CREATE TABLE message_part_pending (
            receiver   TEXT NOT NULL,
            id         TEXT NOT NULL,
            part_id    TEXT NOT NULL,
            portal_id  TEXT NOT NULL,
            room_id    TEXT NOT NULL,
            txn_id     TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (receiver, id, part_id),
            FOREIGN KEY (portal_id, receiver) REFERENCES portal(id, receiver) ON DELETE CASCADE
        )"""
    )


@upgrade_table.register(description="Handled inbox events keep only their ID (no content at rest)")
async def upgrade_v4(conn: Connection, scheme: Scheme) -> None:
    # Handled events used to be kept whole, including a typed password. Only the event ID and
    # the done flag are needed (deduplication of replayed transactions).
    await conn.execute("UPDATE matrix_event_inbox SET event_json='{}' WHERE done=true")
    await conn.execute("CREATE INDEX as_transaction_received_idx ON as_transaction (received_at)")


@upgrade_table.register(description="A login's remote account, beside its own ID")
async def upgrade_v5(conn: Connection, scheme: Scheme) -> None:
    # Logins used to be keyed by the typed address. The ID is now the bridge's own; the account
    # tells a Matrix user's re-login (same login) from another user's (a login of its own).
    await conn.execute("ALTER TABLE user_login ADD COLUMN remote_account TEXT NOT NULL DEFAULT ''")
    await conn.execute("UPDATE user_login SET remote_account=id")
    await conn.execute(
        "CREATE UNIQUE INDEX user_login_account_idx ON user_login (user_mxid, remote_account)"
    )


@upgrade_table.register(description="Worker processes and their leases (several workers on PostgreSQL)")
async def upgrade_v6(conn: Connection, scheme: Scheme) -> None:
    # Used only with `workers.enabled` (PostgreSQL); created everywhere so every database has one
    # schema. Times are milliseconds of the database server's clock, never a worker's.
    await conn.execute(
        """CREATE TABLE worker (
            id      TEXT PRIMARY KEY,
            seen_at BIGINT NOT NULL
        )"""
    )
    # `subject` is a Matrix user (the worker holds all of that user's logins and rooms) or
    # COORDINATOR (the worker that handles events of rooms no user owns).
    await conn.execute(
        """CREATE TABLE worker_lease (
            subject    TEXT PRIMARY KEY,
            worker     TEXT NOT NULL,
            expires_at BIGINT NOT NULL
        )"""
    )
    await conn.execute("CREATE INDEX worker_lease_worker_idx ON worker_lease (worker)")
    # The worker handling an inbox event: one worker at a time, and a room's later events wait
    # while an earlier one is claimed by another live worker.
    await conn.execute("ALTER TABLE matrix_event_inbox ADD COLUMN claimed_by TEXT")
    await conn.execute("CREATE INDEX matrix_event_inbox_room_idx ON matrix_event_inbox (room_id, seq)")
