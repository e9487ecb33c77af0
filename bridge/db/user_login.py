from __future__ import annotations

from dataclasses import dataclass
import json
from typing import Any

from mautrix.util.async_db import Database

from bridge.db.rows import Record

_COLUMNS = "id, user_mxid, remote_name, space_room, state, metadata, remote_account"


@dataclass(slots=True)
class UserLoginRow:
    id: str
    user_mxid: str
    remote_name: str
    space_room: str | None
    state: str
    metadata: dict[str, Any]
    # The remote account (the connector's RemoteAccountID); `id` is the bridge's own.
    remote_account: str = ""

    @classmethod
    def from_record(cls, row: Record) -> UserLoginRow:
        return cls(
            row["id"], row["user_mxid"], row["remote_name"], row["space_room"], row["state"],
            json.loads(row["metadata"]), row["remote_account"],
        )


class UserLoginTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, login_id: str) -> UserLoginRow | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM user_login WHERE id=$1", login_id)
        return UserLoginRow.from_record(row) if row else None

    async def all(self) -> list[UserLoginRow]:
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM user_login ORDER BY id")
        return [UserLoginRow.from_record(r) for r in rows]

    async def for_user(self, mxid: str) -> list[UserLoginRow]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM user_login WHERE user_mxid=$1 ORDER BY id", mxid
        )
        return [UserLoginRow.from_record(r) for r in rows]

    async def insert(self, login: UserLoginRow) -> None:
        await self.db.execute(
            f"INSERT INTO user_login ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            login.id, login.user_mxid, login.remote_name, login.space_room, login.state,
            json.dumps(login.metadata), login.remote_account,
        )

    async def update(self, login: UserLoginRow) -> None:
        await self.db.execute(
            """UPDATE user_login SET remote_name=$2, space_room=$3, state=$4, metadata=$5
               WHERE id=$1""",
            login.id, login.remote_name, login.space_room, login.state, json.dumps(login.metadata),
        )

    async def delete(self, login_id: str) -> None:
        await self.db.execute("DELETE FROM user_login WHERE id=$1", login_id)
