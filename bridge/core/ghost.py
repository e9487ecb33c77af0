"""Ghosts: the Matrix puppets of remote users, with their profile kept in sync."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mautrix.appservice import IntentAPI
from mautrix.types import UserID

from ..db import GhostRow, GhostTable
from ..network import NetworkUserID, UserInfo
from . import localpart

if TYPE_CHECKING:
    from mautrix.appservice import AppServiceAPI

log = logging.getLogger("letterbox.ghost")


class Ghosts:
    """Maps remote user IDs to Matrix user IDs (`username_template`) and keeps names current."""

    def __init__(self, az: AppServiceAPI, table: GhostTable, template: str, domain: str) -> None:
        self.az = az
        self.table = table
        self.template = template
        self.domain = domain
        prefix, _, suffix = template.partition("{userid}")
        self._prefix = prefix
        self._suffix = suffix

    def mxid(self, user_id: NetworkUserID | str) -> UserID:
        local = self.template.format(userid=localpart.escape(user_id))
        return UserID(f"@{local}:{self.domain}")

    def network_id(self, mxid: str) -> NetworkUserID | None:
        """The remote ID behind a ghost's user ID, or None if it is not one of ours."""
        local, _, server = mxid.removeprefix("@").partition(":")
        if server != self.domain or not local.startswith(self._prefix) or not local.endswith(self._suffix):
            return None
        inner = local[len(self._prefix): len(local) - len(self._suffix) if self._suffix else None]
        return NetworkUserID(localpart.unescape(inner))

    async def intent_for(self, user_id: NetworkUserID | str, info: UserInfo | None = None) -> IntentAPI:
        intent: IntentAPI = self.az.intent(self.mxid(user_id))
        await intent.ensure_registered()
        row = await self.table.get(user_id)
        changed = row is None
        if row is None:
            row = GhostRow(id=user_id, name="", name_set=False)
        renames = info is not None and info.authoritative and info.name != row.name
        if info and info.name and (renames or not row.name_set):
            try:
                await intent.set_displayname(info.name, check_current=False)
                row.name, row.name_set = info.name, True
                changed = True
            except Exception:
                log.warning("Could not set display name of ghost %s", intent.mxid, exc_info=True)
        if changed:
            await self.table.upsert(row)
        return intent
