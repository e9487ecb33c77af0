"""Matrix-side events the core hands to a network client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ids import MessageID, PortalID


@dataclass(frozen=True, slots=True)
class PortalRef:
    """What a client needs to know about the portal an event happened in."""

    portal_id: PortalID
    room_id: str
    is_direct: bool
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class MatrixMessage:
    """An m.room.message the user sent. Media is fetched lazily with `download`."""

    portal: PortalRef
    event_id: str
    sender: str
    content: dict[str, Any]
    timestamp_ms: int
    thread_root: MessageID | None = None
    # In a thread: its most recent message (either side's), which a reply without an explicit
    # `reply_to` answers. None outside threads.
    thread_latest: MessageID | None = None
    reply_to: MessageID | None = None
    # Display names of Matrix users mentioned, keyed by user ID.
    mention_names: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class MatrixEdit:
    portal: PortalRef
    event_id: str
    sender: str
    target: MessageID
    new_content: dict[str, Any]


@dataclass(slots=True)
class MatrixReaction:
    portal: PortalRef
    event_id: str
    sender: str
    target: MessageID
    key: str


@dataclass(slots=True)
class MatrixRedaction:
    portal: PortalRef
    event_id: str
    sender: str
    target: MessageID


@dataclass(slots=True)
class MatrixReadReceipt:
    portal: PortalRef
    sender: str
    target: MessageID
