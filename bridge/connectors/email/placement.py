"""Where a received mail goes, judged by who could have sent it.

A mail that names a known thread (`References`/`In-Reply-To`) joins that thread's room only if
its sender belongs there: one of the room's people, or the owner with a verified mail. Anyone else
gets their own room, so a stranger cannot slip into a conversation and become the person the
owner's next message answers. A delivery report joins the mail it reports on only when it is
plausible (addressed to the owner, about a mail the owner sent, from the owner's own mail domain
or authenticated), and it is never a reply target. Mail whose sender is not verified is marked,
names nobody, and (if configured) goes to the quarantine room.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...network import MessageID, PortalID
from .addresses import Mailbox, address_key
from .authenticity import Authenticity, SenderCheck
from .db import MailIndexRow
from .inbound.model import ParsedEmail
from .inbound.parse import UNKNOWN_SENDER
from .inbound.reports import BOUNCE_SENDERS
from .rooms import QUARANTINE_PORTAL, RoomKey, quarantine_room, room_for

if TYPE_CHECKING:
    from .client import EmailClient

MAILER_DAEMON = Mailbox("mailer-daemon@letterbox.invalid", "Mail delivery system")
# People named in a notice about those left out of a room: the rest are counted.
MAX_LISTED = 50


@dataclass(slots=True)
class Placement:
    portal: PortalID
    room: RoomKey
    sender: Mailbox
    vouched: bool
    thread_root: MessageID | None = None
    reply_to: MessageID | None = None
    joined_thread: bool = False
    answerable: bool = True
    notices: list[str] = field(default_factory=list)
    # Who becomes one of the room's people through this mail (address keys).
    new_people: list[str] = field(default_factory=list)


def thread_refs(parsed: ParsedEmail) -> list[str]:
    """References plus In-Reply-To (when missing from References), oldest first."""
    refs = list(parsed.references)
    if parsed.in_reply_to and parsed.in_reply_to not in refs:
        refs.append(parsed.in_reply_to)
    return refs


def unverified_notice(sender: Mailbox, check: SenderCheck) -> str:
    why = f" ({check.reason})" if check.reason else ""
    if check.status is Authenticity.FAILED:
        return f"⚠️ Sender check failed: this mail may not be from {sender.addr}{why}."
    return f"⚠️ Sender not verified: nothing proves this mail is from {sender.addr}{why}."


def left_out_notice(left_out: tuple[Mailbox, ...]) -> str:
    listed = ", ".join(m.addr for m in left_out[:MAX_LISTED])
    more = f" and {len(left_out) - MAX_LISTED} more" if len(left_out) > MAX_LISTED else ""
    return f"Also addressed to (not added to this room): {listed}{more}."


def _related_domain(domain: str, other: str) -> bool:
    domain, other = domain.lower().strip("."), other.lower().strip(".")
    return bool(domain and other) and (domain == other or domain.endswith("." + other))


class Placer:
    def __init__(self, client: EmailClient) -> None:
        self.client = client

    def _mta_domains(self) -> list[str]:
        """The owner's mail domain and the parents of its mail servers' host names."""
        client = self.client
        domains = [client.address.rpartition("@")[2]]
        for host in (client.smtp_spec.host, client.imap_spec.host):
            if "." in host and not host.replace(".", "").isdigit():
                domains.append(host.partition(".")[2] or host)
        return domains

    async def place(self, parsed: ParsedEmail, check: SenderCheck) -> Placement:
        client = self.client
        own = client.own_addresses
        cfg = client.connector.config
        vouched = check.verified
        people = [parsed.sender, *parsed.to, *parsed.cc]
        key = room_for(people, own, parsed.list_id, vouched=vouched, max_members=cfg.max_people_per_mail)
        left_out = [left_out_notice(key.left_out)] if key.left_out else []
        notices = left_out if vouched else [unverified_notice(parsed.sender, check), *left_out]
        if parsed.report is not None:
            return await self._report(parsed, check, key, notices, left_out)
        if cfg.trust.quarantine and not vouched:
            return Placement(QUARANTINE_PORTAL, quarantine_room(), parsed.sender, vouched,
                             notices=notices, new_people=[address_key(parsed.sender.addr)])
        refs = thread_refs(parsed)
        login_id = client.login.login_id
        thread_portal = await client.mail_index.portal_for_any(login_id, list(reversed(refs)))
        own_room = [address_key(m.addr) for m in people if address_key(m.addr) not in own]
        reply_to = MessageID(parsed.in_reply_to) if parsed.in_reply_to else None
        placement = Placement(key.portal_id, key, parsed.sender, vouched, notices=notices,
                              new_people=own_room, reply_to=reply_to,
                              thread_root=MessageID(parsed.references[0]) if parsed.references else reply_to)
        if thread_portal and thread_portal != key.portal_id:
            if not await self._belongs(PortalID(thread_portal), parsed, vouched):
                # Its own room: the thread it names is elsewhere (relations only resolve in-room).
                return placement
            placement.portal = PortalID(thread_portal)
            # Joining someone else's room: only a verified mail may add people to it.
            placement.new_people = own_room if vouched else []
        placement.joined_thread = bool(thread_portal)
        return placement

    async def _belongs(self, portal: PortalID, parsed: ParsedEmail, vouched: bool) -> bool:
        sender = address_key(parsed.sender.addr)
        if sender in self.client.own_addresses:
            return vouched  # a forged "From: me" cannot pick the room
        if portal.startswith("list:"):
            return parsed.list_id is not None and portal == f"list:{parsed.list_id.lower()}"
        return await self.client.portal_people.includes(self.client.login.login_id, portal, sender)

    async def _report(self, parsed: ParsedEmail, check: SenderCheck, key: RoomKey,
                      notices: list[str], plausible_notices: list[str]) -> Placement:
        report = parsed.report
        assert report is not None
        sender = parsed.sender if parsed.sender.addr != UNKNOWN_SENDER.addr else MAILER_DAEMON
        original = await self._reported_original(parsed, check)
        if original is not None:
            return Placement(PortalID(original.portal_id), key, sender, check.verified,
                             thread_root=MessageID(original.message_id),
                             reply_to=MessageID(original.message_id), joined_thread=True,
                             answerable=False, notices=plausible_notices)
        return Placement(key.portal_id, key, sender, check.verified, answerable=False,
                         notices=notices, new_people=[address_key(sender.addr)])

    async def _reported_original(self, parsed: ParsedEmail, check: SenderCheck) -> MailIndexRow | None:
        """The mail a report is about, if the report is plausible; None otherwise."""
        report = parsed.report
        client = self.client
        own = client.own_addresses
        if report is None or not report.original_message_id:
            return None
        if not any(address_key(m.addr) in own for m in [*parsed.to, *parsed.cc]):
            return None
        original = await client.mail_index.get(client.login.login_id, report.original_message_id)
        if original is None or address_key(original.sender) not in own or not original.portal_id:
            return None
        from_mta = parsed.sender.addr.rpartition("@")[0].lower() in BOUNCE_SENDERS and any(
            _related_domain(parsed.sender.domain, d) for d in self._mta_domains())
        return original if (from_mta or check.verified) else None
