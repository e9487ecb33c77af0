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
from .addresses import address_key
from .authenticity import Authenticity, SenderCheck
from .authenticity.check import MailEvidence
from .db import MailIndexRow
from .imap import FetchedMail
from .inbound.convert import ConvertedEmail, convert_email, convert_rejected
from .inbound.limits import MailRejected
from .inbound.model import ParsedEmail
from .inbound.parse import UNKNOWN_SENDER, parse_email
from .placement import MAILER_DAEMON, Placement, Placer, thread_refs
from .rooms import ghost_id, room_for, user_info

if TYPE_CHECKING:
    from .client import EmailClient

log = logging.getLogger("letterbox.email.receive")


def fallback_message_id(raw: bytes) -> str:
    """A stable ID for mail without a Message-ID header (the same bytes give the same ID)."""
    return f"<{hashlib.sha256(raw).hexdigest()[:32]}@no-message-id.letterbox.invalid>"


class InboundPipeline:
    """Implements the IMAP engine's MailSink for one login."""

    def __init__(self, client: EmailClient) -> None:
        self.client = client
        self.placer = Placer(client)

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
            await index.upsert(self._index_row(parsed, message_id, PortalID(""), mail, answerable=True))
            return
        check = await self._check_sender(parsed, mail)
        placement = await self.placer.place(parsed, check)
        remote = await self._remote_message(parsed, message_id, mail, placement)
        # The core says where the mail is: a mail it posted before stays in its portal.
        portal = await self.client.bridge.queue_remote_event(login_id, remote)
        await self.client.portal_people.add(login_id, portal, placement.new_people)
        await index.upsert(self._index_row(parsed, message_id, portal, mail,
                                           answerable=placement.answerable))

    def _own_sent_mail(self, address: str, mail: FetchedMail) -> bool:
        return mail.folder == self.client.sent_folder and address_key(address) in self.client.own_addresses

    async def _check_sender(self, parsed: ParsedEmail, mail: FetchedMail) -> SenderCheck:
        """Own mail found in the Sent folder is the owner's; anything else is checked."""
        if self._own_sent_mail(parsed.sender.addr, mail):
            return SenderCheck(Authenticity.VERIFIED, "Sent folder")
        check = await self.client.authenticator.check(MailEvidence(
            raw=mail.raw, from_domain=parsed.sender.domain if parsed.sender.addr != UNKNOWN_SENDER.addr else "",
            from_headers=parsed.from_headers, auth_results=parsed.auth_results,
            dkim_signed=parsed.dkim_signed))
        if not check.verified:
            log.info("Sender of %s in %s not verified (%s by %s): %s", parsed.message_id, mail.folder,
                     check.status.value, check.how, check.reason)
        return check

    async def _remote_message(self, parsed: ParsedEmail, message_id: str, mail: FetchedMail,
                              placement: Placement) -> RemoteMessage:
        refs = thread_refs(parsed)
        known_thread = placement.joined_thread and any([await self.is_known(r) for r in refs])
        # Sanitising hostile HTML can take a moment: keep the event loop free meanwhile.
        converted: ConvertedEmail = await asyncio.to_thread(
            convert_email, parsed, include_subject=not known_thread, notices=placement.notices)
        timestamp = parsed.date or mail.internal_date or datetime.now(UTC)
        sender = placement.sender
        return RemoteMessage(
            portal=placement.portal,
            sender=ghost_id(sender),
            sender_info=user_info(sender, vouched=placement.vouched),
            # Posted as the user's own Matrix account (double puppeting) only when authentic:
            # their address, found in their own Sent folder; a forged From never qualifies.
            from_self=self._own_sent_mail(sender.addr, mail),
            timestamp=timestamp,
            chat_info=placement.room.info,
            message_id=MessageID(message_id),
            parts=[ConvertedPart(e.type, e.content) for e in converted.events],
            uploads=[MediaUpload(k, a.data, a.mimetype, a.filename) for k, a in converted.uploads.items()],
            thread_root=placement.thread_root,
            reply_to=placement.reply_to,
        )

    def _index_row(self, parsed: ParsedEmail, message_id: str, portal: PortalID, mail: FetchedMail,
                   *, answerable: bool) -> MailIndexRow:
        date = parsed.date or mail.internal_date or datetime.now(UTC)
        return MailIndexRow(
            login_id=self.client.login.login_id,
            message_id=message_id,
            portal_id=portal,
            subject=parsed.subject,
            sender=parsed.sender.addr,
            recipients=[m.addr for m in parsed.to],
            cc=[m.addr for m in parsed.cc],
            refs=thread_refs(parsed),
            folder=mail.folder,
            uid=mail.uid,
            sent_at=int(date.timestamp() * 1000),
            answerable=answerable,
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

