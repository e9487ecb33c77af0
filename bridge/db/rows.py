"""The row type returned by mautrix's async_db (asyncpg.Record or sqlite3.Row)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

Record: TypeAlias = Mapping[str, Any]
