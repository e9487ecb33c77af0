"""ParsedEmail -> Matrix event drafts (pure: no network, no database).

Media is not uploaded here. Each file the events need is listed in `ConvertedEmail.uploads` under a
key, and referenced from event content as `mxc://letterbox.placeholder/<key>` (in `url`, and in
`<img src>` inside `formatted_body`; the scheme belongs to the connector contract,
bridge/network/placeholders.py). The core uploads every entry and substitutes the real URLs.

One mail becomes: a text event (or a notice for delivery reports), then one event per attachment
that is not already shown inline. Nothing in an email can ping anyone, so every event carries an
empty `m.mentions`. An event whose JSON would exceed `max_event_bytes` is cut at a paragraph or
line boundary with a note, and the whole mail is attached as `message.eml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from html import escape
import json
import re
from typing import Any

from ....network.placeholders import placeholder, referenced_keys
from ..html_doc import HtmlDoc
from ..html_text import html_to_text, text_to_html
from .html_sanitize import rebuild, remove_hidden_doc, sanitize_html
from .media import msgtype_for, verified_mimetype
from .model import Attachment, DeliveryReport, ParsedEmail
from .quotes import QUOTE, SUMMARIES, Split, split_html, split_text

RAW_KEY = "message"
RAW_FILENAME = "message.eml"
MAX_SUBJECT_CHARS = 500
# HTML beyond this is not even looked at: at most ~60 kB of it can be shown, and the HTML passes
# run in the caller's event loop. The whole mail is then attached as message.eml.
MAX_HTML_CHARS = 250_000
ENCRYPTED_NOTE = (
    "This message is encrypted and cannot be shown here; the encrypted part is attached."
)
TRUNCATION_NOTE = (
    "The message was too long to show in full; the complete email is attached as message.eml."
)


@dataclass(slots=True)
class EventDraft:
    """One event to send: `content` may reference uploads through placeholder URLs."""

    type: str
    content: dict[str, Any]
    attachment_key: str | None = None


@dataclass(slots=True)
class ConvertedEmail:
    events: list[EventDraft] = field(default_factory=list)
    uploads: dict[str, Attachment] = field(default_factory=dict)


def event_size(content: Mapping[str, Any]) -> int:
    """Bytes of the content as the homeserver sees it (UTF-8, no ASCII escaping)."""
    return len(json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


# --- text ---------------------------------------------------------------------------------


def cut_text(text: str, limit: int) -> str:
    """At most `limit` characters of `text`, ending at a paragraph, line or word boundary."""
    if len(text) <= limit:
        return text
    window = text[:limit]
    for separator in ("\n\n", "\n", " "):
        index = window.rfind(separator)
        if index >= limit // 2:
            return window[:index].rstrip()
    return window


def _subject_line(subject: str) -> str:
    if len(subject) > MAX_SUBJECT_CHARS:
        return subject[: MAX_SUBJECT_CHARS - 1] + "…"
    return subject


@dataclass(slots=True)
class _Body:
    """The text event's parts before assembly; HTML parts are already sanitised."""

    prefix_text: str  # subject / labels, plain
    prefix_html: str
    kept_text: str
    kept_html: str | None  # None: no HTML source, render from text when needed
    stripped_text: str = ""
    stripped_html: str = ""
    summary: str = SUMMARIES[QUOTE]
    note: str = ""
    # The stripped part came first (a bottom-posted reply): it is shown, folded, above the rest.
    stripped_first: bool = False

    def content(self, msgtype: str, *, with_stripped: bool = True) -> dict[str, Any]:
        body_parts = [p for p in (self.prefix_text, self.kept_text) if p]
        if with_stripped and self.stripped_text:
            if self.stripped_first:
                body_parts.insert(1 if self.prefix_text else 0, self.stripped_text)
            else:
                body_parts.append(self.stripped_text)
        if self.note:
            body_parts.append(self.note)
        content: dict[str, Any] = {
            "msgtype": msgtype,
            "body": "\n\n".join(body_parts) or "(empty message)",
        }
        needs_html = (
            self.kept_html is not None
            or bool(self.prefix_html)
            or (with_stripped and bool(self.stripped_text))
        )
        if needs_html:
            html_parts = [self.prefix_html] if self.prefix_html else []
            kept = self.kept_html if self.kept_html is not None else text_to_html(self.kept_text)
            if kept:
                html_parts.append(kept)
            if with_stripped and (self.stripped_html or self.stripped_text):
                inner = self.stripped_html or text_to_html(self.stripped_text)
                folded = f"<details><summary>{escape(self.summary)}</summary>{inner}</details>"
                if self.stripped_first:
                    html_parts.insert(1 if self.prefix_html else 0, folded)
                else:
                    html_parts.append(folded)
            if self.note:
                html_parts.append(f"<p><em>{escape(self.note)}</em></p>")
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = "".join(html_parts) or escape(content["body"])
        content["m.mentions"] = {}
        return content


def _fit(body: _Body, msgtype: str, max_bytes: int) -> tuple[dict[str, Any], bool]:
    """The content, shrunk to `max_bytes`; the flag says whether anything was left out."""
    content = body.content(msgtype)
    if event_size(content) <= max_bytes:
        return content, False
    body.note = TRUNCATION_NOTE
    content = body.content(msgtype, with_stripped=False)
    if event_size(content) <= max_bytes:
        return content, True
    text, html = body.kept_text, body.kept_html
    html_doc = HtmlDoc.of(html) if html is not None else None  # read once for every cut below
    scale = 1.0
    for _ in range(12):
        overflow = event_size(content) - max_bytes
        if overflow <= 0:
            break
        size = event_size(content)
        scale *= max(0.1, (max_bytes / size) * 0.95)
        body.kept_text = cut_text(text, int(len(text) * scale))
        if html is not None and html_doc is not None:
            cut_html, _ = rebuild(html_doc, int(len(html) * scale))
            if len(cut_html) < len(html) * scale / 4:
                # No usable block boundary: fall back to the cut plain text.
                cut_html = text_to_html(body.kept_text)
            body.kept_html = cut_html
        content = body.content(msgtype, with_stripped=False)
    if event_size(content) > max_bytes:
        # Pathological prefix (subject) or markup: plain text only, hard cut.
        body.kept_html, body.prefix_html = None, ""
        body.kept_text = body.kept_text[: max_bytes // 8]
        body.prefix_text = body.prefix_text[: max_bytes // 8]
        content = body.content(msgtype, with_stripped=False)
    return content, True


_MARKUP = re.compile(r"<(html|body|div|table|td|p|span|br)\b[^>]*>", re.IGNORECASE)


def _looks_like_markup(text: str) -> bool:
    """A "plain text" alternative that is really HTML source (some bulk mailers send that)."""
    return len(_MARKUP.findall(text[:20_000])) >= 3


# --- assembly -----------------------------------------------------------------------------


def _attachment_key(index: int) -> str:
    return f"att{index}"


class _Builder:
    def __init__(self, parsed: ParsedEmail, max_event_bytes: int, notices: list[str]) -> None:
        self.parsed = parsed
        self.notices = notices
        self.max_event_bytes = max_event_bytes
        self.result = ConvertedEmail()
        self.truncated = False
        self.cid_keys: dict[str, str] = {}
        for index, attachment in enumerate(parsed.attachments):
            if attachment.content_id:
                self.cid_keys.setdefault(attachment.content_id.lower(), _attachment_key(index))

    def _cid_urls(self) -> dict[str, str]:
        return {cid: placeholder(key) for cid, key in self.cid_keys.items()}

    def _prefix(self, include_subject: bool, label: str | None) -> tuple[str, str]:
        subject = _subject_line(self.parsed.subject) if include_subject else ""
        text_parts, html_parts = [], []
        if label:
            text_parts.append(f"{label}:")
            html_parts.append(f"<em>{escape(label)}:</em>")
        if subject:
            text_parts.append(subject)
            html_parts.append(f"<strong>{escape(subject)}</strong>")
        notice_text, notice_html = _notices(self.notices)
        if not text_parts:
            return notice_text, notice_html
        return (notice_text + "\n" if notice_text else "") + " ".join(text_parts), (
            notice_html + " ".join(html_parts) + "<br>")

    def text_body(self, include_subject: bool, label: str | None) -> _Body:
        parsed = self.parsed
        prefix_text, prefix_html = self._prefix(include_subject, label)
        html = parsed.html
        if len(html) > MAX_HTML_CHARS:
            html = html[:MAX_HTML_CHARS]
            self.truncated = True
        text = parsed.text
        # The HTML is tokenized once here; every pass below reads that (html_doc.py).
        doc = HtmlDoc.of(html) if html.strip() else None
        if doc is not None and (not text.strip() or _looks_like_markup(text)):
            text = html_to_text(remove_hidden_doc(doc))
        if not text.strip() and parsed.encrypted:
            text = ENCRYPTED_NOTE
        split: Split = split_text(text)
        body = _Body(
            prefix_text=prefix_text,
            prefix_html=prefix_html,
            kept_text=split.kept,
            kept_html=None,
            stripped_text=split.stripped,
            summary=SUMMARIES[split.kind],
            stripped_first=split.leading,
        )
        if self.truncated:
            body.note = TRUNCATION_NOTE
        if doc is not None:
            html_split = split_html(doc)
            kept_raw = html_split.kept_doc or html_split.kept
            stripped_raw = html_split.stripped_doc or html_split.stripped
            kept_html = sanitize_html(kept_raw, self._cid_urls())
            # HTML that sanitises to nothing (say, only a tracking pixel) defers to the text.
            body.kept_html = kept_html if kept_html.strip() else None
            if html_split.stripped:
                body.stripped_html = sanitize_html(stripped_raw, self._cid_urls())
                body.summary = SUMMARIES[html_split.kind]
                body.stripped_first = html_split.leading
                if not body.stripped_text or split.leading != html_split.leading:
                    # The text alternative had no recognisable quote: derive both halves from HTML.
                    body.kept_text = html_to_text(kept_raw) or body.kept_text
                    body.stripped_text = html_to_text(stripped_raw)
            elif body.stripped_text:
                # Only the text alternative showed a quote; the HTML stays whole and the text
                # version is given in full too, so both say the same.
                body.kept_text = text.strip()
                body.stripped_text = ""
                body.stripped_first = False
        return body

    def add_event(
        self, content: dict[str, Any], key: str | None = None, event_type: str = "m.room.message"
    ) -> None:
        self.result.events.append(EventDraft(type=event_type, content=content, attachment_key=key))

    def add_text(self, body: _Body, msgtype: str) -> None:
        content, truncated = _fit(body, msgtype, self.max_event_bytes)
        self.add_event(content)
        self.truncated = self.truncated or truncated

    def attach_raw(self) -> None:
        """The whole mail as `message.eml`, for a text that had to be cut."""
        raw = Attachment(filename=RAW_FILENAME, mimetype="message/rfc822", data=self.parsed.raw)
        self.result.uploads[RAW_KEY] = raw
        self.add_event(file_content(raw, RAW_KEY, "message/rfc822"), RAW_KEY)

    def attachments(self) -> None:
        # Images shown inside the text (cid: references that survived sanitising) get no event.
        used_keys = {k for e in self.result.events for k in referenced_keys(e.content)}
        for index, attachment in enumerate(self.parsed.attachments):
            key = _attachment_key(index)
            # The upload is labelled with the type its bytes were verified to have.
            mimetype = verified_mimetype(attachment.data, attachment.mimetype)
            self.result.uploads[key] = replace(attachment, mimetype=mimetype)
            if key in used_keys:
                continue
            self.add_event(file_content(attachment, key, mimetype), key)
        # Uploads nobody references would only waste space.
        referenced = used_keys | {e.attachment_key for e in self.result.events if e.attachment_key}
        self.result.uploads = {k: v for k, v in self.result.uploads.items() if k in referenced}


def file_content(attachment: Attachment, key: str, mimetype: str) -> dict[str, Any]:
    return {
        "msgtype": msgtype_for(mimetype),
        "body": attachment.filename,
        "filename": attachment.filename,
        "url": placeholder(key),
        "info": {"mimetype": mimetype, "size": len(attachment.data)},
        "m.mentions": {},
    }


def _report_summary(report: DeliveryReport) -> str:
    if report.kind == "disposition-notification":
        what = report.disposition or "processed"
        return f"Read receipt: the message was {what}."
    failed = report.failed_recipients
    if not failed:
        recipients = ", ".join(r.recipient for r in report.recipients) or "the recipients"
        actions = {r.action for r in report.recipients if r.action}
        action = "/".join(sorted(actions)) if actions else "reported"
        return f"Delivery report for {recipients}: {action}."
    delayed = all((r.action or "") == "delayed" for r in report.recipients if r.failed)
    verb = "Delivery delayed" if delayed else "Delivery failed"
    reason = report.diagnostic
    status = report.status
    text = f"{verb} to {', '.join(failed)}"
    if reason:
        text += f": {reason}"
    if status and (not reason or status not in reason):
        text += f" (status {status})"
    return text if text.endswith(".") else text + "."


def _notices(notices: list[str]) -> tuple[str, str]:
    """Lines the bridge puts above a mail (sender not verified, people left out), text and HTML."""
    return "\n".join(notices), "".join(f"<p><em>{escape(n)}</em></p>" for n in notices)


def convert_email(
    parsed: ParsedEmail, *, include_subject: bool, max_event_bytes: int = 60_000,
    notices: list[str] | None = None,
) -> ConvertedEmail:
    """The events for one received mail (see the module docstring for the placeholder scheme).

    `notices` are shown above the mail's text, emphasised (what the bridge warns about it).
    """
    builder = _Builder(parsed, max_event_bytes, list(notices or []))
    if parsed.report is not None:
        report = parsed.report
        summary = _report_summary(report)
        details = report.text.strip() or html_to_text(parsed.html[:MAX_HTML_CHARS])
        notice_text, notice_html = _notices(builder.notices)
        body = _Body(
            prefix_text=(notice_text + "\n" if notice_text else "") + summary,
            prefix_html=f"{notice_html}<p><strong>{escape(summary)}</strong></p>",
            kept_text="",
            kept_html=None,
            stripped_text=details,
            summary="Report details",
        )
        builder.add_text(body, "m.notice")
    else:
        label = "Auto-reply" if parsed.auto_reply else None
        body = builder.text_body(include_subject, label)
        has_text = bool(
            body.kept_text.strip() or body.kept_html or body.stripped_text or body.prefix_text
        )
        if has_text or not parsed.attachments:
            builder.add_text(body, "m.notice" if parsed.auto_reply else "m.text")
        builder.attachments()
    if builder.truncated:
        builder.attach_raw()
    return builder.result


def convert_rejected(raw: bytes, reason: str) -> ConvertedEmail:
    """A notice saying why the mail could not be shown, with the raw message attached."""
    result = ConvertedEmail()
    text = (
        f"An email could not be shown: {reason}. "
        f"The original message is attached as {RAW_FILENAME}."
    )
    result.events.append(
        EventDraft(
            type="m.room.message", content={"msgtype": "m.notice", "body": text, "m.mentions": {}}
        )
    )
    attachment = Attachment(filename=RAW_FILENAME, mimetype="message/rfc822", data=raw)
    result.uploads[RAW_KEY] = attachment
    result.events.append(
        EventDraft(
            type="m.room.message",
            content=file_content(attachment, RAW_KEY, "message/rfc822"),
            attachment_key=RAW_KEY,
        )
    )
    return result
