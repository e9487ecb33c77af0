"""Machine-generated mail: delivery status notifications, read receipts, bounces, auto-replies."""

from __future__ import annotations

from email import policy
from email.message import Message
from email.parser import HeaderParser
import re

from .charset import decode_bytes, fix_surrogates
from .headers import clean_text, first, header_text, normalise_message_id, raw_headers
from .mimeparts import serialise
from .model import DeliveryReport, RecipientStatus

_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def _status_code(status: str | None) -> str | None:
    """The enhanced status code (RFC 3463) in a Status field, if there is one."""
    match = _STATUS.search(status) if status else None
    return match.group(1) if match else None
_SMTP_REPLY = re.compile(r"\b[45]\d\d[\s\-]")
BOUNCE_SENDERS = {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"}
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status|fail|notification)|returned mail|mail delivery failed|"
    r"failure notice|delivery has failed|non[- ]?deliver|could not be delivered|"
    r"mail system error|delivery problem",
    re.IGNORECASE,
)
# Where the quoted original message starts in a plain-text bounce.
_ORIGINAL_START = re.compile(
    r"^\s*(-{2,}.*(original|copy of|returned|message|headers).*|"
    r"(Return-path|Received|Reporting-MTA|DKIM-Signature|Content-Type):.*)$",
    re.IGNORECASE,
)
_RETURNED_ID = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_AUTO_REPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-reply")


def _blocks_from_text(text: str) -> list[dict[str, list[str]]]:
    blocks: list[dict[str, list[str]]] = []
    for chunk in re.split(r"\r?\n[ \t]*\r?\n", text):
        if chunk.strip():
            msg = HeaderParser(policy=policy.compat32).parsestr(chunk.strip() + "\n\n")
            blocks.append(raw_headers(msg))
    return blocks


def _status_blocks(part: Message) -> list[dict[str, list[str]]]:
    """The header blocks of a message/delivery-status or message/disposition-notification part.

    The stdlib parses these bodies inconsistently (one message per block, everything in one
    block when a blank line is missing, or a single message for the `global` variants), so the
    text is put back together and split on blank lines here.
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        text = "\n\n".join(
            serialise(block).decode("utf-8", "replace")
            for block in payload
            if isinstance(block, Message)
        )
    else:
        data = part.get_payload(decode=True)
        text = decode_bytes(data, "utf-8") if isinstance(data, bytes) else ""
    return _blocks_from_text(text.replace("\r\n", "\n"))


def _typed_address(value: str | None) -> str | None:
    """`rfc822; user@example.org` -> `user@example.org`."""
    if not value:
        return None
    value = header_text(value)
    kind, sep, addr = value.partition(";")
    found = (addr if sep else kind).strip().strip("<>").strip()
    return found or None


_REPLY_CONTINUATION = re.compile(r"(?<=\s)[245]\d\d[ \-](?:[245]\.\d{1,3}\.\d{1,3}\s+)?")
MAX_DIAGNOSTIC_CHARS = 300


def clean_diagnostic(text: str) -> str | None:
    """One readable line: repeated SMTP reply codes of continuation lines removed, length capped."""
    text = " ".join(text.split())
    if not text:
        return None
    head, _, tail = text.partition(" ")
    text = (head + " " + _REPLY_CONTINUATION.sub("", tail)).strip() if tail else head
    if len(text) > MAX_DIAGNOSTIC_CHARS:
        text = text[: MAX_DIAGNOSTIC_CHARS - 1].rstrip() + "…"
    return text


def _diagnostic(value: str | None) -> str | None:
    if not value:
        return None
    text = header_text(value)
    kind, sep, rest = text.partition(";")
    if sep and re.fullmatch(r"[A-Za-z0-9\-]+", kind.strip()):
        text = rest.strip()
    return clean_diagnostic(text)


def delivery_status(part: Message) -> list[RecipientStatus]:
    recipients: list[RecipientStatus] = []
    for block in _status_blocks(part):
        recipient = _typed_address(first(block, "final-recipient")) or _typed_address(
            first(block, "original-recipient")
        )
        if recipient is None:
            continue
        status = first(block, "status")
        recipients.append(
            RecipientStatus(
                recipient=recipient,
                action=clean_text(first(block, "action") or "").lower() or None,
                status=_status_code(status),
                diagnostic=_diagnostic(first(block, "diagnostic-code")),
            )
        )
    return recipients


def read_receipt(part: Message) -> tuple[str | None, str | None]:
    """(final recipient, disposition type such as "displayed") of a read receipt."""
    recipient = None
    kind = None
    for block in _status_blocks(part):
        recipient = recipient or _typed_address(first(block, "final-recipient"))
        value = first(block, "disposition")
        if value and kind is None:
            kind = clean_text(value).rpartition(";")[2].strip().split("/")[0] or None
    return recipient, kind


def original_message_id(part: Message) -> str | None:
    """The Message-ID of the returned original (a message/rfc822 or text/rfc822-headers part)."""
    ctype = part.get_content_type()
    if ctype in ("message/rfc822", "message/global"):
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return normalise_message_id(first(raw_headers(payload[0]), "message-id"))
        return None
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return None
    headers = HeaderParser(policy=policy.compat32).parsestr(decode_bytes(data, "utf-8"))
    return normalise_message_id(first(raw_headers(headers), "message-id"))


def _sender_is_daemon(headers: dict[str, list[str]]) -> bool:
    return_path = (first(headers, "return-path") or "").strip()
    if return_path in ("<>", "") and "return-path" in headers:
        return True
    for value in (first(headers, "from") or "", return_path):
        match = _ADDRESS.search(fix_surrogates(value)) or re.search(r"<?([\w\-]+)>?", value)
        local = (match.group(0) if match else "").strip("<>").partition("@")[0].lower()
        if local in BOUNCE_SENDERS:
            return True
    return False


def heuristic_bounce(headers: dict[str, list[str]], text: str) -> DeliveryReport | None:
    """A bounce that is not an RFC 3464 report, recognised by sender, subject and wording."""
    subject = header_text(first(headers, "subject"))
    failed_header = [
        a
        for v in headers.get("x-failed-recipients", [])
        for a in _ADDRESS.findall(fix_surrogates(v))
    ]
    if not failed_header and not (_sender_is_daemon(headers) and _BOUNCE_SUBJECT.search(subject)):
        return None
    lines = text.splitlines()
    summary: list[str] = []
    for line in lines:
        if summary and _ORIGINAL_START.match(line):
            break
        summary.append(line)
    own = {
        a.lower()
        for name in ("from", "to", "return-path", "delivered-to", "envelope-to")
        for v in headers.get(name, [])
        for a in _ADDRESS.findall(fix_surrogates(v))
    }
    recipients = failed_header or [
        a
        for a in _ADDRESS.findall("\n".join(summary))
        if a.lower() not in own and a.split("@")[0].lower() not in BOUNCE_SENDERS
    ]
    recipients = list(dict.fromkeys(recipients))
    if not recipients:
        return None
    reason_lines = [
        line.strip() for line in summary if _SMTP_REPLY.search(line) or _STATUS.search(line)
    ]
    diagnostic = clean_diagnostic(" ".join(reason_lines))
    status_match = _STATUS.search(" ".join(reason_lines))
    rest = "\n".join(lines[len(summary) :])
    original = _RETURNED_ID.search(rest)
    return DeliveryReport(
        kind="bounce",
        recipients=[
            RecipientStatus(
                recipient=r,
                action="failed",
                status=status_match.group(1) if status_match else None,
                diagnostic=diagnostic,
            )
            for r in recipients
        ],
        original_message_id=normalise_message_id(original.group(1)) if original else None,
        text=text,
    )


def auto_submitted(headers: dict[str, list[str]]) -> str | None:
    value = clean_text(first(headers, "auto-submitted") or "").lower()
    return value or None


def is_auto_reply(headers: dict[str, list[str]]) -> bool:
    """An RFC 3834 auto-response (vacation notice and the like), not a general notification.

    `Auto-Submitted: auto-generated` alone is not enough: chat clients and notification services
    send it on ordinary messages.
    """
    submitted = auto_submitted(headers) or ""
    if submitted.startswith("auto-replied"):
        return True
    if any(name in headers for name in _AUTO_REPLY_HEADERS):
        return True
    precedence = clean_text(first(headers, "precedence") or "").lower()
    if precedence == "auto_reply":
        return True
    suppress = clean_text(first(headers, "x-auto-response-suppress") or "").lower()
    subject = header_text(first(headers, "subject")).lower()
    # Exchange marks its out-of-office replies only like this.
    return bool(suppress) and subject.startswith(("automatic reply:", "out of office"))
