"""The inbound pipeline: a fetched mail becomes a remote message in the right room and thread.

This is the sync engine's `MailSink` for one login. `deliver` returns only after the events are
posted and the mail is indexed, so the folder checkpoint never runs ahead of Matrix.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
import hashlib
import logging
from typing import TYPE_CHECKING

from ...network import MessageID, NetworkUserID, PortalID, RemoteMessage, UserInfo
from ...network.events import ConvertedPart, MediaUpload
from .addresses import Mailbox, address_key
from .db import MailIndexRow
from .imap import FetchedMail
from .inbound.convert import ConvertedEmail, convert_email, convert_rejected
from .inbound.limits import MailRejected
from .inbound.model import ParsedEmail
from .inbound.parse import parse_email
from .rooms import ghost_id, room_for, user_info

if TYPE_CHECKING:
    from .client import EmailClient

log = logging.getLogger("letterbox.email.receive")

MAILER_DAEMON = Mailbox("mailer-daemon@letterbox.invalid", "Mail delivery system")


def fallback_message_id(raw: bytes) -> str:
    """A stable ID for mail without a Message-ID header (the same bytes give the same ID)."""
    return f"<{hashlib.sha256(raw).hexdigest()[:32]}@no-message-id.letterbox.invalid>"


class InboundPipeline:
    """Implements the IMAP engine's MailSink for one login."""

    def __init__(self, client: EmailClient) -> None:
        self.client = client

    async def is_known(self, message_id: str) -> bool:
        """Indexed here: posted to Matrix (the index row is written once the core has posted
        it) or composed here. A mail posted just before a crash, not yet indexed, counts as
        unknown; delivering it again costs a conversion, the core does not post it twice."""
        return await self.client.mail_index.get(self.client.login.login_id, message_id) is not None

    async def failed(self, mail: FetchedMail, exc: BaseException) -> None:
        log.error("Giving up on %s UID %d of %s: %s", mail.folder, mail.uid, self.client.address, exc)
        await self._post_rejected(mail, f"the bridge could not process it ({type(exc).__name__})")

    async def deliver(self, mail: FetchedMail) -> None:
        limits = self.client.connector.parse_limits
        try:
            parsed = await parse_email(mail.raw, limits)
        except MailRejected as e:
            log.warning("Mail UID %d in %s rejected: %s", mail.uid, mail.folder, e.reason)
            await self._post_rejected(mail, e.reason)
            return
        message_id = parsed.message_id or fallback_message_id(mail.raw)
        index = self.client.mail_index
        login_id = self.client.login.login_id
        if await self.is_known(message_id):
            # Already in Matrix or sent from it (the same mail in another folder, our own sent
            # mail): only where it is stored is recorded; its portal stays as indexed.
            await index.upsert(self._index_row(parsed, message_id, PortalID(""), mail))
            return
        remote = await self._remote_message(parsed, message_id, mail)
        # The core says where the mail is: a mail it posted before stays in its portal.
        portal = await self.client.bridge.queue_remote_event(login_id, remote)
        await index.upsert(self._index_row(parsed, message_id, portal, mail))

    async def _remote_message(self, parsed: ParsedEmail, message_id: str, mail: FetchedMail) -> RemoteMessage:
        own = self.client.own_addresses
        index = self.client.mail_index
        login_id = self.client.login.login_id
        refs = _thread_refs(parsed)
        sender = parsed.sender
        reply_to = parsed.in_reply_to
        portal_id = await index.portal_for_any(login_id, list(reversed(refs)))
        if parsed.report and parsed.report.original_message_id:
            original = await index.get(login_id, parsed.report.original_message_id)
            if original:
                portal_id, reply_to = PortalID(original.portal_id), parsed.report.original_message_id
            sender = MAILER_DAEMON if not parsed.sender.addr else parsed.sender
        people = [parsed.sender, *parsed.to, *parsed.cc]
        key = room_for(people, own, parsed.list_id)
        if portal_id is None:
            portal_id = key.portal_id
        known_thread = any([await self.is_known(r) for r in refs])
        # Sanitising hostile HTML can take a moment: keep the event loop free meanwhile.
        converted: ConvertedEmail = await asyncio.to_thread(
            convert_email, parsed, include_subject=not known_thread)
        timestamp = parsed.date or mail.internal_date or datetime.now(UTC)
        return RemoteMessage(
            portal=PortalID(portal_id),
            sender=ghost_id(sender),
            sender_info=user_info(sender),
            timestamp=timestamp,
            chat_info=key.info,
            message_id=MessageID(message_id),
            parts=[ConvertedPart(e.type, e.content) for e in converted.events],
            uploads=[MediaUpload(k, a.data, a.mimetype, a.filename) for k, a in converted.uploads.items()],
            thread_root=MessageID(parsed.references[0]) if parsed.references else (
                MessageID(reply_to) if reply_to else None),
            reply_to=MessageID(reply_to) if reply_to else None,
        )

    def _index_row(self, parsed: ParsedEmail, message_id: str, portal: PortalID, mail: FetchedMail) -> MailIndexRow:
        date = parsed.date or mail.internal_date or datetime.now(UTC)
        return MailIndexRow(
            login_id=self.client.login.login_id,
            message_id=message_id,
            portal_id=portal,
            subject=parsed.subject,
            sender=parsed.sender.addr,
            recipients=[m.addr for m in parsed.to],
            cc=[m.addr for m in parsed.cc],
            refs=_thread_refs(parsed),
            folder=mail.folder,
            uid=mail.uid,
            sent_at=int(date.timestamp() * 1000),
        )

    async def _post_rejected(self, mail: FetchedMail, reason: str) -> None:
        converted = await asyncio.to_thread(convert_rejected, mail.raw, reason)
        message_id = fallback_message_id(mail.raw)
        own = next(iter(sorted(self.client.own_addresses)))
        remote = RemoteMessage(
            portal=PortalID(f"dm:{address_key(MAILER_DAEMON.addr)}"),
            sender=NetworkUserID(address_key(MAILER_DAEMON.addr)),
            sender_info=UserInfo(name="Letterbox (unreadable mail)"),
            timestamp=mail.internal_date or datetime.now(UTC),
            chat_info=room_for([MAILER_DAEMON], {own}, None).info,
            message_id=MessageID(message_id),
            parts=[ConvertedPart(e.type, e.content) for e in converted.events],
            uploads=[MediaUpload(k, a.data, a.mimetype, a.filename) for k, a in converted.uploads.items()],
        )
        await self.client.bridge.queue_remote_event(self.client.login.login_id, remote)


def _thread_refs(parsed: ParsedEmail) -> list[str]:
    """References plus In-Reply-To (when missing from References), oldest first."""
    refs = list(parsed.references)
    if parsed.in_reply_to and parsed.in_reply_to not in refs:
        refs.append(parsed.in_reply_to)
    return refs
