"""Matrix message -> the email that answers the right mail, addressed to the right people.

Subject rule for a new thread (the first message after `start-chat`, or a top-level message in a
room with no mail yet): a first line `Subject: ...` sets it explicitly (and is not part of the
body); otherwise the first line of the message, shortened to about 78 characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
import re
from typing import TYPE_CHECKING, Any

from ...network import ConnectorError, MatrixMessage
from .addresses import InvalidAddress, Mailbox, address_key, parse_mailbox
from .db import MailIndexRow
from .outbound import (
    ComposeError,
    MailBody,
    OutgoingAttachment,
    OutgoingMail,
    compose,
    matrix_to_mail_body,
    message_id_for_event,
    reply_subject,
    subject_from_first_line,
)

if TYPE_CHECKING:
    from .client import EmailClient

MEDIA_MSGTYPES = {"m.image", "m.file", "m.audio", "m.video"}
_SUBJECT_LINE = re.compile(r"^\s*subject:\s*(.+?)\s*(?:\n|$)", re.IGNORECASE)


@dataclass(slots=True)
class PreparedMail:
    message: EmailMessage
    message_id: str
    recipients: list[str]
    index: MailIndexRow
    # Addresses of the answered mail left out because they do not belong to the room.
    dropped: list[str]

    @property
    def raw(self) -> bytes:
        return self.message.as_bytes(policy=policy.SMTP)


async def prepare_mail(client: EmailClient, msg: MatrixMessage) -> PreparedMail:
    """Build the mail for a Matrix message; raises ConnectorError with a user-facing reason."""
    content = msg.content
    answered = await _answered_mail(client, msg)
    own = client.own_addresses
    sender = Mailbox(client.address, client.display_name)
    dropped: list[str] = []
    if answered is not None:
        to, cc = _reply_all(answered, own)
        to, cc, dropped = await _room_people_only(client, msg.portal.portal_id, to, cc)
        subject = reply_subject(answered.subject)
        in_reply_to = answered.message_id
        references = _references(answered, msg.thread_root)
    else:
        if not msg.portal.portal_id.startswith("dm:"):
            raise ConnectorError("There is no email to answer in this room yet.")
        to, cc = [_dm_address(msg.portal.portal_id)], []
        subject, content = _new_thread_subject(content)
        in_reply_to, references = None, []
    if not to and not cc:
        raise ConnectorError("Nobody to send this to: every recipient is one of your own addresses.")
    if len(to) + len(cc) > client.connector.config.max_recipients:
        raise ConnectorError(f"Too many recipients ({len(to) + len(cc)}); the limit is "
                             f"{client.connector.config.max_recipients}.")
    body, attachments = await _body_and_attachments(client, msg, content)
    message_id = message_id_for_event(msg.event_id, sender.domain)
    mail = OutgoingMail(
        sender=sender, to=to, cc=cc, subject=subject, body=body, message_id=message_id,
        date=datetime.fromtimestamp(msg.timestamp_ms / 1000, UTC) if msg.timestamp_ms else datetime.now(UTC),
        attachments=attachments, in_reply_to=in_reply_to, references=references,
    )
    try:
        message = compose(mail)
    except ComposeError as e:
        raise ConnectorError(f"This message cannot be sent as email: {e.reason}") from None
    recipients = [m.addr for m in [*to, *cc]]
    index = MailIndexRow(
        login_id=client.login.login_id, message_id=message_id, portal_id=msg.portal.portal_id,
        subject=subject, sender=sender.addr, recipients=[m.addr for m in to], cc=[m.addr for m in cc],
        refs=references, sent_at=msg.timestamp_ms,
    )
    return PreparedMail(message, message_id, recipients, index, dropped)


async def _answered_mail(client: EmailClient, msg: MatrixMessage) -> MailIndexRow | None:
    """The mail replied to; in a thread, else its latest mail (either side's), else its root."""
    index, login_id = client.mail_index, client.login.login_id
    for candidate in (msg.reply_to, msg.thread_latest, msg.thread_root):
        if candidate:
            row = await index.get(login_id, candidate)
            # A delivery report is never answered; nor is a mail of another room.
            if row and row.answerable and row.portal_id == msg.portal.portal_id:
                return row
    if msg.thread_root is None and msg.portal.portal_id.startswith(("dm:", "group:", "list:")):
        # A top-level message continues the most recent thread with these people.
        return await index.latest_in_portal(login_id, msg.portal.portal_id)
    return None


def _references(answered: MailIndexRow, thread_root: str | None) -> list[str]:
    """The answered mail's chain plus itself, starting at the thread's root even when the
    correspondent's client dropped it (RFC 5322 3.6.4 keeps the first reference)."""
    chain = [*answered.refs, answered.message_id]
    if thread_root and thread_root not in chain:
        chain.insert(0, thread_root)
    return list(dict.fromkeys(chain))


def _mailbox(addr: str) -> Mailbox | None:
    try:
        return parse_mailbox(addr)
    except InvalidAddress:
        return None


def _reply_all(row: MailIndexRow, own: set[str]) -> tuple[list[Mailbox], list[Mailbox]]:
    first = [] if address_key(row.sender) in own else [row.sender]
    seen: set[str] = set()

    def keep(addrs: list[str]) -> list[Mailbox]:
        out = []
        for addr in addrs:
            key = address_key(addr)
            mb = _mailbox(addr)
            if mb and key not in own and key not in seen:
                seen.add(key)
                out.append(mb)
        return out

    return keep([*first, *row.recipients]), keep(row.cc)


async def _room_people_only(client: EmailClient, portal_id: str, to: list[Mailbox], cc: list[Mailbox]
                            ) -> tuple[list[Mailbox], list[Mailbox], list[str]]:
    """Only the room's people are answered: an address that only a mail from outside the room
    (or from an unverified sender) named is left out, and the caller tells the user."""
    login_id = client.login.login_id
    dropped: list[str] = []

    async def keep(boxes: list[Mailbox]) -> list[Mailbox]:
        kept = []
        for mb in boxes:
            if await client.portal_people.includes(login_id, portal_id, address_key(mb.addr)):
                kept.append(mb)
            else:
                dropped.append(mb.addr)
        return kept

    return await keep(to), await keep(cc), dropped


def _dm_address(portal_id: str) -> Mailbox:
    mb = _mailbox(portal_id.removeprefix("dm:"))
    if mb is None:
        raise ConnectorError("This room's address is not valid for sending.")
    return mb


def _new_thread_subject(content: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    body = content.get("body", "") if isinstance(content.get("body"), str) else ""
    match = _SUBJECT_LINE.match(body)
    if match:
        rest = body[match.end():]
        new_content = {k: v for k, v in content.items() if k not in ("formatted_body", "format")}
        new_content["body"] = rest
        return match.group(1), new_content
    if content.get("msgtype") in MEDIA_MSGTYPES:
        return str(content.get("filename") or body or "File"), content
    return subject_from_first_line(body) or "(no subject)", content


async def _body_and_attachments(
    client: EmailClient, msg: MatrixMessage, content: dict[str, Any]
) -> tuple[MailBody, list[OutgoingAttachment]]:
    def mention_name(user_id: str) -> str | None:
        return msg.mention_names.get(user_id)

    msgtype = content.get("msgtype")
    if msgtype not in MEDIA_MSGTYPES:
        return matrix_to_mail_body(content, mention_name=mention_name, sender=msg.sender), []
    file = content.get("file") if isinstance(content.get("file"), dict) else None
    url = file.get("url") if file is not None else content.get("url")
    if not isinstance(url, str) or not url.startswith("mxc://"):
        raise ConnectorError("The message has no file to send.")
    try:
        data = await client.bridge.download_media(url, encrypted_file=file)
    except Exception as e:
        raise ConnectorError(f"Could not download the file from the homeserver: {e}") from None
    info = content.get("info") or {}
    body = content.get("body") if isinstance(content.get("body"), str) else ""
    filename = content.get("filename") if isinstance(content.get("filename"), str) else body
    attachment = OutgoingAttachment(filename=filename or "file", data=data,
                                    mimetype=str(info.get("mimetype") or "application/octet-stream"))
    caption = body if content.get("filename") and body and body != filename else ""
    if caption:
        text = matrix_to_mail_body({"msgtype": "m.text", "body": caption}, mention_name=mention_name)
    else:
        text = MailBody(text=f"(attachment: {attachment.filename})")
    return text, [attachment]
