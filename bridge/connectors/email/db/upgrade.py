from __future__ import annotations

import json

from mautrix.util.async_db import Connection, Scheme, UpgradeTable

upgrade_table = UpgradeTable(version_table_name="email_version", database_name="Letterbox email")


@upgrade_table.register(description="Folder checkpoints, mail index and outbox")
async def upgrade_v1(conn: Connection, scheme: Scheme) -> None:
    blob = "BYTEA" if scheme in (Scheme.POSTGRES, Scheme.COCKROACH) else "BLOB"
    await conn.execute(
        """CREATE TABLE email_folder_checkpoint (
            login_id    TEXT NOT NULL,
            folder      TEXT NOT NULL,
            uidvalidity BIGINT NOT NULL,
            last_uid    BIGINT NOT NULL,
            PRIMARY KEY (login_id, folder)
        )"""
    )
    # Every mail the bridge knows per login (received or sent): threading and addressing data.
    await conn.execute(
        """CREATE TABLE email_mail (
            login_id    TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            portal_id   TEXT NOT NULL,
            subject     TEXT NOT NULL DEFAULT '',
            sender      TEXT NOT NULL DEFAULT '',
            recipients  TEXT NOT NULL DEFAULT '[]',
            cc          TEXT NOT NULL DEFAULT '[]',
            refs        TEXT NOT NULL DEFAULT '[]',
            folder      TEXT,
            uid         BIGINT,
            sent_at     BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (login_id, message_id)
        )"""
    )
    await conn.execute("CREATE INDEX email_mail_portal_idx ON email_mail (login_id, portal_id, sent_at)")
    await conn.execute(
        f"""CREATE TABLE email_outbox (
            event_id     TEXT PRIMARY KEY,
            login_id     TEXT NOT NULL,
            portal_id    TEXT NOT NULL,
            room_id      TEXT NOT NULL,
            message_id   TEXT NOT NULL,
            raw          {blob} NOT NULL,
            recipients   TEXT NOT NULL,
            state        TEXT NOT NULL,
            attempts     INTEGER NOT NULL DEFAULT 0,
            next_attempt BIGINT NOT NULL DEFAULT 0,
            last_error   TEXT,
            created_at   BIGINT NOT NULL
        )"""
    )
    await conn.execute("CREATE INDEX email_outbox_due_idx ON email_outbox (state, next_attempt)")


@upgrade_table.register(description="Sent-folder copies as part of the durable outbox state")
async def upgrade_v2(conn: Connection, scheme: Scheme) -> None:
    # Set together with state 'sent'; cleared once the copy is in the Sent folder.
    await conn.execute("ALTER TABLE email_outbox ADD COLUMN copy_pending BOOLEAN NOT NULL DEFAULT false")


@upgrade_table.register(description="Room membership of correspondents; mails that are no reply target")
async def upgrade_v3(conn: Connection, scheme: Scheme) -> None:
    await conn.execute(
        """CREATE TABLE email_portal_person (
            login_id  TEXT NOT NULL,
            portal_id TEXT NOT NULL,
            person    TEXT NOT NULL,
            PRIMARY KEY (login_id, portal_id, person)
        )"""
    )
    # Delivery reports and the like are shown, but a reply never goes to their sender.
    await conn.execute("ALTER TABLE email_mail ADD COLUMN answerable BOOLEAN NOT NULL DEFAULT TRUE")
    rows = await conn.fetch(
        "SELECT login_id, portal_id, sender, recipients, cc FROM email_mail WHERE portal_id <> ''")
    for row in rows:
        people = [row["sender"], *json.loads(row["recipients"]), *json.loads(row["cc"])]
        for person in dict.fromkeys(p.casefold() for p in people if p):
            await conn.execute(
                """INSERT INTO email_portal_person (login_id, portal_id, person) VALUES ($1, $2, $3)
                   ON CONFLICT (login_id, portal_id, person) DO NOTHING""",
                row["login_id"], row["portal_id"], person,
            )
