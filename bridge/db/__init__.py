"""The core's database: raw SQL per table, upgrade steps in `upgrade.py`."""

from __future__ import annotations

from .ghost import GhostRow, GhostTable
from .inbox import InboxEvent, InboxTable
from .lease import COORDINATOR, LeaseTable
from .management_room import ManagementRoomTable
from .message import MessageRow, MessageTable
from .pending_part import PendingPart, PendingPartTable
from .portal import PortalRow, PortalTable
from .retired_portal import RetiredPortalRow, RetiredPortalTable
from .upgrade import upgrade_table
from .user import UserRow, UserTable
from .user_login import UserLoginRow, UserLoginTable

__all__ = [
    "COORDINATOR",
    "GhostRow",
    "GhostTable",
    "InboxEvent",
    "InboxTable",
    "LeaseTable",
    "ManagementRoomTable",
    "MessageRow",
    "MessageTable",
    "PendingPart",
    "PendingPartTable",
    "PortalRow",
    "PortalTable",
    "RetiredPortalRow",
    "RetiredPortalTable",
    "UserLoginRow",
    "UserLoginTable",
    "UserRow",
    "UserTable",
    "upgrade_table",
]
