"""Records produced by parsing one received email."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..addresses import Mailbox


@dataclass(slots=True)
class Attachment:
    """A file carried by the mail; `data` is the decoded content, `filename` is always set.

    `path`: inside the parser worker, a big attachment's content is in this file instead of in
    `data` (the pool reads it back and removes it before the result leaves the pool).
    """

    filename: str
    mimetype: str
    data: bytes
    content_id: str | None = None
    inline: bool = False
    path: str | None = None


@dataclass(slots=True)
class RecipientStatus:
    """One per-recipient block of a delivery status notification (RFC 3464)."""

    recipient: str
    action: str | None = None
    status: str | None = None
    diagnostic: str | None = None

    @property
    def failed(self) -> bool:
        if self.action:
            return self.action.lower() in ("failed", "delayed")
        return self.status is not None and self.status[:1] in ("4", "5")


@dataclass(slots=True)
class DeliveryReport:
    """A bounce or other delivery/read report.

    `kind` is "delivery-status" (RFC 3464), "bounce" (a non-standard bounce recognised by its
    headers and text) or "disposition-notification" (a read receipt, RFC 8098). `text` is the
    human-readable part of the report.
    """

    kind: str
    recipients: list[RecipientStatus] = field(default_factory=list)
    original_message_id: str | None = None
    disposition: str | None = None
    text: str = ""

    @property
    def failed_recipients(self) -> list[str]:
        return [r.recipient for r in self.recipients if r.failed]

    @property
    def status(self) -> str | None:
        return next((r.status for r in self.recipients if r.failed and r.status), None)

    @property
    def diagnostic(self) -> str | None:
        return next((r.diagnostic for r in self.recipients if r.failed and r.diagnostic), None)


@dataclass(slots=True)
class ParsedEmail:
    """Everything the bridge needs from one received message (headers decoded, bodies as text)."""

    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    subject: str
    sender: Mailbox
    to: list[Mailbox] = field(default_factory=list)
    cc: list[Mailbox] = field(default_factory=list)
    reply_to: list[Mailbox] = field(default_factory=list)
    list_id: str | None = None
    date: datetime | None = None
    auto_reply: bool = False
    report: DeliveryReport | None = None
    text: str = ""
    html: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    raw_size: int = 0
    raw: bytes = b""
    # Not asked for by every caller, but needed to render the message honestly.
    encrypted: bool = False
    auto_submitted: str | None = None
    # Evidence of who sent it: Authentication-Results values (top first), From header count.
    auth_results: list[str] = field(default_factory=list)
    from_headers: int = 0
    dkim_signed: bool = False
