"""The email connector's own tables (version table `email_version`)."""

from __future__ import annotations

from .checkpoint import CheckpointTable
from .login_data import LoginDataTable
from .mail_index import MailIndexRow, MailIndexTable
from .outbox import OutboxRow, OutboxState, OutboxTable
from .portal_people import PortalPeopleTable
from .upgrade import upgrade_table

__all__ = [
    "CheckpointTable",
    "LoginDataTable",
    "MailIndexRow",
    "MailIndexTable",
    "OutboxRow",
    "OutboxState",
    "OutboxTable",
    "PortalPeopleTable",
    "upgrade_table",
]
