"""IMAP side of the email connector: account settings, login check, the sync engine that
keeps one mailbox in sync, and single mailbox operations for the outbound side.

The engine talks to the rest of the bridge only through the small protocols
`CheckpointStore`, `MailSink` and `StateListener`.
"""

from __future__ import annotations

from .account import ImapAccount
from .backoff import Backoff
from .checkpoint import Checkpoint, CheckpointStore
from .connection import ImapConnection, check_login
from .errors import (
    ImapAuthFailed,
    ImapCertificateError,
    ImapConfigError,
    ImapConnectFailed,
    ImapConnectionLost,
    ImapError,
    ImapFolderError,
    ImapProtocolError,
)
from .kept import KeptImapSession
from .ops import AppendResult, ImapOps
from .policy import Backfill, DeliveryRetry
from .sink import FetchedMail, MailSink, SeenListener
from .state import StateListener, SyncState
from .sync import ImapSync

__all__ = [
    "AppendResult",
    "Backfill",
    "Backoff",
    "Checkpoint",
    "CheckpointStore",
    "DeliveryRetry",
    "FetchedMail",
    "ImapAccount",
    "ImapAuthFailed",
    "ImapCertificateError",
    "ImapConfigError",
    "ImapConnectFailed",
    "ImapConnection",
    "ImapConnectionLost",
    "ImapError",
    "ImapFolderError",
    "ImapOps",
    "ImapProtocolError",
    "ImapSync",
    "KeptImapSession",
    "MailSink",
    "SeenListener",
    "StateListener",
    "SyncState",
    "check_login",
]
