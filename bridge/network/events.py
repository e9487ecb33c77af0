"""Remote events: what a network client pushes into the core (`BridgeAPI.queue_remote_event`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .ids import MessageID, NetworkUserID, PortalID


@dataclass(slots=True)
class UserInfo:
    """Profile of a remote user, applied to its ghost.

    `authoritative=False` marks a name the network cannot vouch for: it names a ghost that has no
    name yet, but never replaces one.
    """

    name: str | None = None
    identifiers: list[str] = field(default_factory=list)
    authoritative: bool = True


@dataclass(slots=True)
class ChatMember:
    user_id: NetworkUserID
    info: UserInfo | None = None
    is_self: bool = False


@dataclass(slots=True)
class ChatInfo:
    """What a portal room should look like. `is_direct` marks one-to-one chats."""

    name: str | None = None
    topic: str | None = None
    members: list[ChatMember] = field(default_factory=list)
    is_direct: bool = False


@dataclass(slots=True)
class MediaUpload:
    """A file the core uploads before sending; `key` is referenced by a placeholder URL."""

    key: str
    data: bytes
    mimetype: str
    filename: str


@dataclass(slots=True)
class ConvertedPart:
    """One Matrix event of a converted remote message (content as sent, placeholders allowed)."""

    event_type: str
    content: dict[str, Any]
    part_id: str = ""


@dataclass(kw_only=True, slots=True)
class RemoteEvent:
    portal: PortalID
    sender: NetworkUserID
    sender_info: UserInfo | None = None
    timestamp: datetime | None = None
    # Info for creating the portal if it does not exist yet.
    chat_info: ChatInfo | None = None
    # Written by the logged-in user themselves (elsewhere): with double puppeting it appears as
    # their real Matrix account instead of `sender`'s ghost.
    from_self: bool = False


@dataclass(kw_only=True, slots=True)
class RemoteMessage(RemoteEvent):
    """A new message. `thread_root`/`reply_to` reference earlier remote message IDs."""

    message_id: MessageID
    parts: list[ConvertedPart]
    uploads: list[MediaUpload] = field(default_factory=list)
    thread_root: MessageID | None = None
    reply_to: MessageID | None = None


@dataclass(kw_only=True, slots=True)
class RemoteEdit(RemoteEvent):
    target: MessageID
    parts: list[ConvertedPart]


@dataclass(kw_only=True, slots=True)
class RemoteReaction(RemoteEvent):
    target: MessageID
    key: str


@dataclass(kw_only=True, slots=True)
class RemoteDelete(RemoteEvent):
    target: MessageID


@dataclass(kw_only=True, slots=True)
class RemoteReadReceipt(RemoteEvent):
    """`sender` read `target`. With `from_self`, the logged-in user read it elsewhere: their own
    read marker moves (only with double puppeting; else it is dropped)."""

    target: MessageID


@dataclass(kw_only=True, slots=True)
class RemoteChatInfoChange(RemoteEvent):
    info: ChatInfo
