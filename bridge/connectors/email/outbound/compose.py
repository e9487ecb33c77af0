"""Build a standards-conforming `EmailMessage` from an `OutgoingMail` record.

Every header value passes a check for line breaks and NUL (also after RFC 2047 decoding), addresses
come in as already parsed `Mailbox` objects, and only an allow-list of extra headers is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email import policy as email_policy
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime
import re

from ..addresses import InvalidAddress, Mailbox, address_key, normalise_address
from .body import MailBody
from .errors import HeaderInjection, InvalidHeader
from .header_fold import CheckedAddressHeader, CheckedTextHeader, MessageIdListHeader
from .header_text import clean_display_name, clean_header_text
from .message_ids import cap_references, check_message_id

# Extra headers a caller may set, by lower-case name -> spelling used in the mail.
ALLOWED_EXTRA_HEADERS = {
    "auto-submitted": "Auto-Submitted",
    "x-auto-response-suppress": "X-Auto-Response-Suppress",
    "precedence": "Precedence",
    "user-agent": "User-Agent",
}
_MIME_TOKEN = r"[a-z0-9!#$&^_.+\-]{1,127}"
_MIME_TYPE = re.compile(f"{_MIME_TOKEN}/{_MIME_TOKEN}")
_DEFAULT_FILENAME = "attachment"


@dataclass(frozen=True, slots=True)
class OutgoingAttachment:
    """A file to attach; `mimetype` falls back to application/octet-stream when unusable."""

    filename: str
    mimetype: str
    data: bytes = field(repr=False)


@dataclass(slots=True)
class OutgoingMail:
    """Everything needed to build one outgoing mail; addresses are already-validated Mailboxes."""

    sender: Mailbox
    to: list[Mailbox]
    subject: str
    body: MailBody
    message_id: str
    date: datetime
    cc: list[Mailbox] = field(default_factory=list)
    attachments: list[OutgoingAttachment] = field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    extra_headers: dict[str, str] = field(default_factory=dict)


def _make_policy() -> email_policy.EmailPolicy:
    registry = HeaderRegistry()
    for name in ("message-id", "in-reply-to", "references"):
        registry.map_to_type(name, MessageIdListHeader)  # type: ignore[arg-type]
    for name in ("subject", *ALLOWED_EXTRA_HEADERS):
        registry.map_to_type(name, CheckedTextHeader)  # type: ignore[arg-type]
    for name in ("from", "to", "cc"):
        registry.map_to_type(name, CheckedAddressHeader)  # type: ignore[arg-type]
    # cte_type 7bit: bodies are quoted-printable/base64 where needed, so the mail is plain ASCII
    # and can go to servers without 8BITMIME unchanged.
    return email_policy.SMTP.clone(header_factory=registry, cte_type="7bit")  # type: ignore[return-value]


POLICY = _make_policy()


def _address(mailbox: Mailbox, field_name: str) -> Address:
    if not isinstance(mailbox, Mailbox):
        raise TypeError(
            f"{field_name} addresses must be Mailbox objects, not {type(mailbox).__name__}"
        )
    if re.search(r"[\r\n\x00]", mailbox.addr):
        raise HeaderInjection(f"an address in {field_name} contains a line break", field=field_name)
    try:
        addr = normalise_address(mailbox.addr)
    except InvalidAddress as exc:
        raise InvalidHeader(
            f"{mailbox.addr!r} in {field_name}: {exc.reason}", field=field_name
        ) from exc
    if addr != mailbox.addr:
        raise InvalidHeader(
            f"{mailbox.addr!r} in {field_name} is not a normalised address", field=field_name
        )
    if not addr.isascii():
        raise InvalidHeader(
            f"{addr} in {field_name}: addresses with non-ASCII characters are not supported",
            field=field_name,
        )
    name = clean_display_name(mailbox.name, f"name in {field_name}")
    local, _, domain = addr.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def _addresses(mailboxes: list[Mailbox], field_name: str, seen: set[str]) -> list[Address]:
    result = []
    for mailbox in mailboxes:
        address = _address(mailbox, field_name)
        key = address_key(address.addr_spec)
        if key not in seen:
            seen.add(key)
            result.append(address)
    return result


def normalise_filename(filename: str) -> str:
    """The attachment name as it will appear in the mail (decoded, no path separators).

    Double quotes become apostrophes: mail readers strip quotes around a parameter value, so a
    name like `""` would otherwise arrive empty.
    """
    name = clean_header_text(filename, "attachment name")
    name = name.replace("/", "_").replace("\\", "_").replace('"', "'")
    return name or _DEFAULT_FILENAME


def _mime_type(mimetype: str) -> tuple[str, str]:
    value = mimetype.split(";", 1)[0].strip().lower()
    if not _MIME_TYPE.fullmatch(value):
        return "application", "octet-stream"
    maintype, subtype = value.split("/")
    if maintype in ("multipart", "message"):
        # These would need a parsed structure, not opaque bytes; attach them as plain files.
        return "application", "octet-stream"
    return maintype, subtype


def _references(mail: OutgoingMail) -> list[str]:
    ids: list[str] = []
    for value in mail.references:
        msg_id = check_message_id(value, "References")
        if msg_id not in ids:
            ids.append(msg_id)
    if mail.in_reply_to is not None:
        parent = check_message_id(mail.in_reply_to, "In-Reply-To")
        if parent in ids:
            ids.remove(parent)
        ids.append(parent)  # the parent is always the last reference
    return cap_references(ids)


def _body_text(text: str) -> str:
    # NUL is not allowed in a mail body (RFC 5322 2.3); U+FFFD keeps its position visible.
    # Lone surrogates (possible in JSON from Matrix) cannot be encoded; they become "?".
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def compose(mail: OutgoingMail) -> EmailMessage:
    """Build the mail; raises HeaderInjection / InvalidHeader with a user-facing reason."""
    if mail.date.tzinfo is None or mail.date.utcoffset() is None:
        raise InvalidHeader("the date must carry a time zone", field="Date")
    seen: set[str] = set()
    to = _addresses(mail.to, "To", seen)
    cc = _addresses(mail.cc, "Cc", seen)
    if not to and not cc:
        raise InvalidHeader("the mail has no recipients", field="To")
    sender = _address(mail.sender, "From")
    subject = clean_header_text(mail.subject, "subject")
    message_id = check_message_id(mail.message_id, "Message-ID")
    if "@" not in message_id:
        raise InvalidHeader("the Message-ID needs the form <id@domain>", field="Message-ID")
    in_reply_to = (
        check_message_id(mail.in_reply_to, "In-Reply-To") if mail.in_reply_to is not None else None
    )
    references = _references(mail)
    extra: list[tuple[str, str]] = []
    for name, value in mail.extra_headers.items():
        canonical = ALLOWED_EXTRA_HEADERS.get(name.lower())
        if canonical is None:
            raise InvalidHeader(f"the header {name!r} may not be set", field=name)
        if any(canonical == seen_name for seen_name, _ in extra):
            raise InvalidHeader(f"the header {canonical} is given twice", field=canonical)
        extra.append((canonical, clean_header_text(value, f"{canonical} header")))
    attachments = [
        (normalise_filename(a.filename), *_mime_type(a.mimetype), a.data) for a in mail.attachments
    ]

    msg = EmailMessage(policy=POLICY)
    msg["From"] = sender
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(mail.date)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    for name, value in extra:
        msg[name] = value

    msg.set_content(_body_text(mail.body.text), subtype="plain", charset="utf-8")
    if mail.body.html is not None:
        msg.add_alternative(_body_text(mail.body.html), subtype="html", charset="utf-8")
    for filename, maintype, subtype, data in attachments:
        msg.add_attachment(bytes(data), maintype=maintype, subtype=subtype, filename=filename)
    for part in msg.walk():
        if part is not msg:
            # EmailMessage.set_content stamps every new part; only the top level needs it
            del part["MIME-Version"]
    if "MIME-Version" not in msg:
        msg["MIME-Version"] = "1.0"
    return msg
