"""Parsing one received message into a `ParsedEmail`, enforcing `ParseLimits`.

`parse_email` (async) hands the work to a worker process (see `pool.py`), which runs
`parse_email_sync`. The sync function also checks the time budget itself, so a caller that runs it
in-process still gets a bounded parse for everything but a hung C call.

The stdlib's feed parser splits the MIME tree, fed in pieces (never the whole mail as one
string); big bodies are kept out of it and decoded from the raw mail (`bigbodies.py`), a big
attachment straight into a file when the caller gives a directory (the parser worker does). It
runs with `policy.compat32`: with `policy.default` the structured Content-Type parsing loses
real-world unquoted boundaries that contain `=` (Outlook Express: `boundary=----=_NextPart_…`),
so such a multipart is never split.
Nothing else from the stdlib's header parsing is used: header values are read raw and decoded
here (`headers.py`, `filenames.py`), leniently and with charset repair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email import policy
from email.feedparser import BytesFeedParser
from email.message import Message
from email.parser import BytesParser
import logging
import os
from pathlib import Path
import re
import tempfile
import time
from typing import Any

from ..addresses import Mailbox
from .bigbodies import BIG_BODY_BYTES, BigBodies
from .charset import decode_bytes
from .filenames import fallback_filename, part_filename
from .flowed import unflow
from .headers import (
    first,
    header_text,
    list_id,
    mailboxes,
    message_id_list,
    normalise_message_id,
    parse_date,
    raw_headers,
    subject_text,
)
from .limits import MailRejected, ParseLimits, too_large
from .mimeparts import content_type, decoded_payload, disposition, serialise, transfer_decode
from .model import Attachment, DeliveryReport, ParsedEmail
from .pool import ParserPool, default_pool
from .reports import (
    auto_submitted,
    delivery_status,
    heuristic_bounce,
    is_auto_reply,
    original_message_id,
    read_receipt,
)

log = logging.getLogger(__name__)

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_SIGNATURE_TYPES = {
    "application/pgp-signature",
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
}
_REPORT_PARTS = {
    "message/delivery-status",
    "message/global-delivery-status",
    "message/disposition-notification",
    "message/global-disposition-notification",
}
# Alternative renderings of a body that add nothing once plain text or HTML is there.
_RENDERINGS = {
    "text/watch-html",
    "text/x-amp-html",
    "text/enriched",
    "text/richtext",
    "text/x-web-markdown",
}
UNKNOWN_SENDER = Mailbox(addr="unknown@invalid", name="")


@dataclass(slots=True)
class _Body:
    """What one subtree of the MIME tree contributes."""

    text: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)

    def extend(self, other: _Body) -> None:
        self.text += other.text
        self.html += other.html
        self.attachments += other.attachments


class _Clock:
    def __init__(self, budget: float) -> None:
        self.deadline = time.monotonic() + budget

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise MailRejected("the message took too long to process")


def _check_structure(msg: Message, limits: ParseLimits, clock: _Clock) -> None:
    """Depth and part-count caps over the whole tree, iteratively (the tree may be hostile)."""
    stack: list[tuple[Message, int]] = [(msg, 1)]
    parts = 0
    while stack:
        part, depth = stack.pop()
        parts += 1
        if depth > limits.max_mime_depth:
            raise MailRejected(
                f"the message is nested more than {limits.max_mime_depth} levels deep"
            )
        if parts > limits.max_parts:
            raise MailRejected(f"the message has more than {limits.max_parts} parts")
        if parts % 32 == 0:
            clock.check()
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in payload if isinstance(child, Message))


def _param(part: Message, name: str) -> str | None:
    try:
        value = part.get_param(name)
    except (ValueError, IndexError, AttributeError):
        return None
    if isinstance(value, tuple):  # RFC 2231 form
        value = value[2]
    return value if isinstance(value, str) else None


def _part_text(part: Message, bodies: BigBodies) -> str:
    data = bodies.decoded(part) if bodies.owns(part) else decoded_payload(part)
    text = decode_bytes(data, _param(part, "charset"))
    del data
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    if content_type(part) == "text/plain" and (_param(part, "format") or "").lower() == "flowed":
        text = unflow(text, delsp=(_param(part, "delsp") or "").lower() == "yes")
    return text


class _Walker:
    def __init__(
        self, clock: _Clock, hint: str | None, bodies: BigBodies, spool_dir: Path | None
    ) -> None:
        self.clock = clock
        self.hint = hint
        self.bodies = bodies
        self.spool_dir = spool_dir
        self.report: DeliveryReport | None = None
        self.encrypted = False

    def _spool(self, part: Message) -> str:
        """Decode a big body straight into a file of `spool_dir`; returns its path."""
        assert self.spool_dir is not None
        fd, path = tempfile.mkstemp(dir=self.spool_dir, prefix="attachment-")
        with os.fdopen(fd, "wb") as sink:
            self.bodies.write_decoded(part, sink)
        return path

    def attachment(self, part: Message, ctype: str, raw: dict[str, list[str]]) -> Attachment:
        name = part_filename(raw, self.hint)
        data, path = b"", None
        if ctype in ("message/rfc822", "message/global"):
            inner: Any = part.get_payload()
            data = (
                serialise(inner[0]) if isinstance(inner, list) and inner else decoded_payload(part)
            )
            encoding = (first(raw, "content-transfer-encoding") or "").strip().lower()
            if encoding in ("base64", "quoted-printable"):
                # Not allowed by RFC 2046, but sent: the stdlib parsed the encoded text as a
                # message, so decode it here and re-read the subject from the real one.
                data = transfer_decode(data, encoding)
                inner = [BytesParser(policy=policy.compat32).parsebytes(data, headersonly=True)]
            if name is None and isinstance(inner, list) and inner:
                subject = header_text(first(raw_headers(inner[0]), "subject"), self.hint)
                name = fallback_filename(ctype, subject[:80] or "message")
        elif self.bodies.owns(part):
            if self.spool_dir is not None:
                path = self._spool(part)
            else:
                data = self.bodies.decoded(part)
        else:
            data = decoded_payload(part)
        content_id = normalise_message_id(first(raw, "content-id"))
        how = disposition(raw)
        return Attachment(
            filename=name or fallback_filename(ctype),
            mimetype=ctype,
            data=data,
            content_id=content_id[1:-1] if content_id else None,
            inline=how == "inline" or (not how and content_id is not None),
            path=path,
        )

    def visit(self, part: Message) -> _Body:
        self.clock.check()
        body = _Body()
        ctype = content_type(part)
        raw = raw_headers(part)
        maintype, _, subtype = ctype.partition("/")
        payload = part.get_payload()
        if maintype == "multipart" and isinstance(payload, list):
            children = [c for c in payload if isinstance(c, Message)]
            if subtype == "alternative":
                return self._alternative(children)
            if subtype == "signed" and children:
                body.extend(self.visit(children[0]))
                for child in children[1:]:
                    if content_type(child) not in _SIGNATURE_TYPES:
                        body.extend(self.visit(child))
                return body
            if subtype == "encrypted":
                self.encrypted = True
                for child in children:
                    if content_type(child) != "application/pgp-encrypted":
                        body.attachments.append(
                            self.attachment(child, content_type(child), raw_headers(child))
                        )
                return body
            if subtype == "report":
                return self._report(part, children)
            for child in children:
                body.extend(self.visit(child))
            return body
        if maintype == "multipart":
            # A multipart without a usable boundary: show what is there as text.
            body.text.append(_part_text(part, self.bodies))
            return body
        if (
            ctype in ("text/plain", "text/html")
            and disposition(raw) != "attachment"
            and part_filename(raw, self.hint) is None
        ):
            text = _part_text(part, self.bodies)
            if text.strip():
                (body.html if subtype == "html" else body.text).append(text)
            return body
        if ctype in _REPORT_PARTS:
            return body
        body.attachments.append(self.attachment(part, ctype, raw))
        return body

    def _alternative(self, children: list[Message]) -> _Body:
        results = [self.visit(child) for child in children]
        body = _Body()
        with_html = [r for r in results if r.html]
        with_text = [r for r in results if r.text and not r.html] or [r for r in results if r.text]
        if with_text:
            body.text = with_text[-1].text
        best = with_html[-1] if with_html else (with_text[-1] if with_text else None)
        if best is not None:
            body.html = best.html
            body.attachments += best.attachments
        # Alternatives that are neither text nor HTML (e.g. a calendar invitation) stay visible,
        # except other renderings of the same text (Apple Watch HTML, AMP, enriched text).
        for child, result in zip(children, results, strict=True):
            if (
                result.text
                or result.html
                or (best is not None and content_type(child) in _RENDERINGS)
            ):
                continue
            body.attachments += result.attachments
        return body

    def _report(self, part: Message, children: list[Message]) -> _Body:
        body = _Body()
        report_type = (_param(part, "report-type") or "").lower()
        statuses = [c for c in children if content_type(c) in _REPORT_PARTS]
        if not statuses:
            for child in children:
                body.extend(self.visit(child))
            return body
        originals = [
            c
            for c in children
            if content_type(c) in ("message/rfc822", "message/global", "text/rfc822-headers")
        ]
        human = [c for c in children if c not in statuses and c not in originals]
        for child in human:
            body.extend(self.visit(child))
        original_id = next((i for i in map(original_message_id, originals) if i), None)
        status_type = content_type(statuses[0])
        if "disposition" in status_type or report_type == "disposition-notification":
            recipient, kind = read_receipt(statuses[0])
            self.report = DeliveryReport(
                kind="disposition-notification",
                recipients=[],
                original_message_id=original_id,
                disposition=kind if recipient is None else f"{kind or 'processed'} by {recipient}",
                text="\n".join(body.text),
            )
        else:
            self.report = DeliveryReport(
                kind="delivery-status",
                recipients=[r for part in statuses for r in delivery_status(part)],
                original_message_id=original_id,
                text="\n".join(body.text),
            )
        return body


def _charset_hint(msg: Message) -> str | None:
    """The first charset declared anywhere in the mail, for undeclared 8-bit header bytes."""
    stack = [msg]
    seen = 0
    while stack and seen < 50:
        part = stack.pop()
        seen += 1
        charset = _param(part, "charset")
        if charset is not None and charset.lower() not in ("us-ascii", "ascii", "utf-8", "utf8"):
            return charset
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
    return None


def _header_block_size(raw: bytes) -> int:
    match = _HEADER_END.search(raw)
    return match.start() if match else len(raw)


def parse_email_sync(
    raw: bytes,
    limits: ParseLimits | None = None,
    *,
    spool_dir: Path | None = None,
    big_body_bytes: int = BIG_BODY_BYTES,
) -> ParsedEmail:
    """Parse `raw` (RFC 5322 bytes); raises `MailRejected` if a cap is exceeded or parsing fails.

    With `spool_dir`, the content of a big attachment is decoded into a file there (its `path`;
    `data` stays empty) instead of into memory. `big_body_bytes`: bodies from this size on are
    kept out of the stdlib parser and decoded from `raw` directly (bigbodies.py).

    An unexpected error inside the parser is logged with its traceback and reported as a
    rejection too: the mail is then still shown to the user (as a notice with the raw message).
    """
    try:
        return _parse(raw, limits or ParseLimits(), spool_dir, big_body_bytes)
    except MailRejected:
        raise
    except RecursionError:
        raise MailRejected("the message structure is too deeply nested") from None
    except MemoryError:
        raise MailRejected("the message needs too much memory to process") from None
    except Exception as exc:
        log.exception("parsing a received mail failed")
        raise MailRejected("the message could not be parsed") from exc


def _parse(
    raw: bytes, limits: ParseLimits, spool_dir: Path | None, big_body_bytes: int
) -> ParsedEmail:
    clock = _Clock(limits.time_budget_s)
    if len(raw) > limits.max_bytes:
        raise MailRejected(too_large(len(raw), limits))
    source = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    if _header_block_size(source) > limits.max_header_bytes:
        raise MailRejected(
            f"the message headers are larger than {limits.max_header_bytes // 1024} KiB"
        )
    bodies = BigBodies(source, big_body_bytes)
    parser = BytesFeedParser(policy=policy.compat32)
    for piece in bodies.skeleton():  # fed in pieces: never the whole mail as one string
        parser.feed(piece)
    msg = parser.close()
    _check_structure(msg, limits, clock)
    bodies.adopt(msg)
    hint = _charset_hint(msg)
    walker = _Walker(clock, hint, bodies, spool_dir)
    body = walker.visit(msg)
    headers = raw_headers(msg)
    text = "\n".join(_join_newline(body.text))
    html = "\n".join(body.html)
    report = walker.report
    if report is None:
        report = heuristic_bounce(headers, text)
    if report is not None and not report.text:
        report.text = text
    senders = (
        mailboxes(headers.get("from"), hint)
        or mailboxes(headers.get("sender"), hint)
        or mailboxes(headers.get("return-path"), hint)
    )
    clock.check()
    return ParsedEmail(
        message_id=normalise_message_id(first(headers, "message-id")),
        in_reply_to=normalise_message_id(first(headers, "in-reply-to")),
        references=message_id_list(headers.get("references")),
        subject=subject_text(first(headers, "subject"), hint),
        sender=senders[0] if senders else UNKNOWN_SENDER,
        to=mailboxes(headers.get("to"), hint),
        cc=mailboxes(headers.get("cc"), hint),
        reply_to=mailboxes(headers.get("reply-to"), hint),
        list_id=list_id(first(headers, "list-id")),
        date=parse_date(first(headers, "date")),
        auto_reply=is_auto_reply(headers) and report is None,
        report=report,
        text=text,
        html=html,
        attachments=body.attachments,
        raw_size=len(raw),
        raw=raw,
        encrypted=walker.encrypted,
        auto_submitted=auto_submitted(headers),
        auth_results=headers.get("authentication-results", []),
        from_headers=len(headers.get("from", [])),
        dkim_signed="dkim-signature" in headers,
    )


def _join_newline(parts: list[str]) -> list[str]:
    """Drop each part's own final newline (but the last's): parts are joined with a newline."""
    return [p[:-1] if p.endswith("\n") and i < len(parts) - 1 else p for i, p in enumerate(parts)]


async def parse_email(
    raw: bytes, limits: ParseLimits | None = None, *, pool: ParserPool | None = None
) -> ParsedEmail:
    """Parse a received mail in a worker process within `limits`; raises `MailRejected`."""
    limits = limits or ParseLimits()
    return await (pool or default_pool()).parse(raw, limits)
