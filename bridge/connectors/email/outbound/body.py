"""Matrix text content (m.text / m.notice / m.emote) -> a text/plain + text/html mail body."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser
import re
from typing import Any
from urllib.parse import unquote

import commonmark
import nh3

from ..html_text import html_to_text
from .errors import UnsupportedContent

TEXT_MSGTYPES = ("m.text", "m.notice", "m.emote")
HTML_FORMAT = "org.matrix.custom.html"

# Tags kept in the HTML part; everything else is unwrapped (its text stays).
_ALLOWED_TAGS = {
    "a",
    "b",
    "i",
    "u",
    "s",
    "em",
    "strong",
    "del",
    "strike",
    "code",
    "pre",
    "blockquote",
    "p",
    "br",
    "hr",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "sup",
    "sub",
    "span",
    "div",
    "details",
    "summary",
}
_ALLOWED_ATTRIBUTES = {"a": {"href"}, "ol": {"start"}}
_DROP_WITH_CONTENT = {"mx-reply", "script", "style", "head", "title", "template"}
_MATRIX_TO = re.compile(r"^https://matrix\.to/#/([^?/]+)", re.IGNORECASE)
_USER_ID = re.compile(r"@[^\s:<>\"']+:[A-Za-z0-9\-\[\]]+(?:\.[A-Za-z0-9\-\[\]]+)*(?::\d+)?")
# Markdown nodes of a body that is just plain paragraphs (raw HTML is shown literally).
_PLAIN_NODES = {
    "document",
    "paragraph",
    "text",
    "softbreak",
    "linebreak",
    "html_inline",
    "html_block",
}
_DOCUMENT = (
    '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "</head>\n<body>\n{}\n</body>\n</html>\n"
)


@dataclass(frozen=True, slots=True)
class MailBody:
    """The text/plain part and, if the message has formatting, a complete HTML document."""

    text: str
    html: str | None = None


MentionName = Callable[[str], "str | None"]


def _strip_reply_fallback(body: str) -> str:
    """Remove the `> <@user:server> quoted text` block Matrix clients put before a reply."""
    lines = body.split("\n")
    if not lines or not re.match(r"^> (?:\* )?<@[^>]+>", lines[0]):
        return body
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index < len(lines) and lines[index].strip() == "":
        index += 1
    return "\n".join(lines[index:])


class _PlainMarkdownRenderer(commonmark.HtmlRenderer):  # type: ignore[misc]  # untyped library
    """CommonMark renderer that shows raw HTML in a Matrix body as literal text."""

    def html_inline(self, node: Any, entering: bool) -> None:
        self.out(node.literal)

    def html_block(self, node: Any, entering: bool) -> None:
        self.cr()
        self.tag("p")
        self.out(node.literal.rstrip("\n"))
        self.tag("/p")
        self.cr()


def _markdown(body: str) -> tuple[str, bool]:
    """(HTML fragment, whether the body used any Markdown beyond plain paragraphs)."""
    ast = commonmark.Parser().parse(body)
    walker = ast.walker()
    rich = False
    event = walker.nxt()
    while event:
        if event["node"].t not in _PLAIN_NODES:
            rich = True
            break
        event = walker.nxt()
    html = _PlainMarkdownRenderer({"softbreak": "<br />\n", "safe": True}).render(ast)
    return html, rich


class _MatrixHtmlRewriter(HTMLParser):
    """Drops reply fallbacks; pills and matrix.to links become plain names, images alt text."""

    def __init__(self, name_for: Callable[[str, str], str], mentioned: set[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.name_for = name_for
        self.mentioned = mentioned
        self.out: list[str] = []
        self.drop_depth = 0
        self.pill: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP_WITH_CONTENT:
            self.drop_depth += 1
            return
        if self.drop_depth:
            return
        attr = {k: v or "" for k, v in attrs}
        if tag == "a" and self.pill is None:
            match = _MATRIX_TO.match(attr.get("href", ""))
            if match:
                self.pill = (unquote(match.group(1)), [])
                return
        if self.pill is not None:
            return
        if tag == "img":
            alt = (attr.get("alt") or "").strip()
            if alt:
                self.out.append(escape(alt))
            return
        rendered = "".join(
            f' {k}="{escape(v or "")}"' for k, v in attrs if re.fullmatch(r"[a-z][a-z0-9\-]*", k)
        )
        self.out.append(f"<{tag}{rendered}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP_WITH_CONTENT:
            return
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "hr", "img") and self.pill is None and not self.drop_depth:
            self.out.append(f"</{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP_WITH_CONTENT:
            self.drop_depth = max(0, self.drop_depth - 1)
            return
        if self.drop_depth:
            return
        if self.pill is not None:
            if tag == "a":
                target, parts = self.pill
                self.pill = None
                self.out.append(escape(self.name_for(target, "".join(parts).strip())))
            return
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self.drop_depth:
            return
        if self.pill is not None:
            self.pill[1].append(data)
            return
        self.out.append(escape(_replace_user_ids(data, self.mentioned, self.name_for)))

    def result(self) -> str:
        self.close()
        if self.pill is not None:  # unterminated link: keep its text
            target, parts = self.pill
            self.out.append(escape(self.name_for(target, "".join(parts).strip())))
        return "".join(self.out)


def _replace_user_ids(text: str, mentioned: set[str], name_for: Callable[[str, str], str]) -> str:
    if not mentioned:
        return text
    return _USER_ID.sub(
        lambda m: name_for(m.group(0), m.group(0)) if m.group(0) in mentioned else m.group(0), text
    )


def _trim(text: str) -> str:
    """Drop blank lines around the text, keeping the indentation of its first line."""
    return text.rstrip().lstrip("\n") if text.strip() else ""


def _sanitise(fragment: str) -> str:
    return nh3.clean(
        fragment,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        clean_content_tags=_DROP_WITH_CONTENT,
        url_schemes={"http", "https", "mailto"},
        link_rel=None,
        strip_comments=True,
    )


def _prefix_emote(fragment: str, prefix: str) -> str:
    escaped = escape(prefix)
    if fragment.startswith("<p>"):
        return f"<p>{escaped} {fragment[3:]}"
    return f"{escaped} {fragment}"


def matrix_to_mail_body(
    content: dict[str, Any],
    *,
    mention_name: MentionName,
    sender: str | None = None,
) -> MailBody:
    """Convert Matrix message content to a mail body.

    `mention_name(user_id)` gives the name to show for a mentioned user (None: use the pill's text).
    `sender` is the Matrix user ID of the author; it names the actor of an m.emote.
    """
    msgtype = content.get("msgtype")
    if msgtype not in TEXT_MSGTYPES:
        raise UnsupportedContent(f"messages of type {msgtype!r} cannot be sent as a mail body")
    body = content.get("body")
    body = _strip_reply_fallback(body) if isinstance(body, str) else ""
    formatted = content.get("formatted_body")
    if content.get("format") != HTML_FORMAT or not isinstance(formatted, str) or not formatted.strip():
        formatted = None

    mentions = content.get("m.mentions")
    mentioned: set[str] = set()
    if isinstance(mentions, dict) and isinstance(mentions.get("user_ids"), list):
        mentioned = {u for u in mentions["user_ids"] if isinstance(u, str)}

    def name_for(user_id: str, fallback: str) -> str:
        if user_id.startswith("@"):
            name = mention_name(user_id)
            if name:
                return name
        return fallback or user_id

    fragment: str | None
    if formatted is not None:
        rewriter = _MatrixHtmlRewriter(name_for, mentioned)
        rewriter.feed(formatted)
        sanitised = _sanitise(rewriter.result()).strip()
        fragment = sanitised
        text = _trim(_replace_user_ids(body, mentioned, name_for)) or html_to_text(sanitised)
    else:
        text = _trim(_replace_user_ids(body, mentioned, name_for))
        rendered, rich = _markdown(body)
        fragment = None
        if rich:
            rewriter = _MatrixHtmlRewriter(name_for, mentioned)
            rewriter.feed(rendered)
            fragment = _sanitise(rewriter.result()).strip()

    if msgtype == "m.emote":
        actor = name_for(sender, sender.split(":", 1)[0].lstrip("@")) if sender else ""
        prefix = f"* {actor}" if actor else "*"
        text = f"{prefix} {text}"
        if fragment is not None:
            fragment = _prefix_emote(fragment, prefix)

    html = _DOCUMENT.format(fragment) if fragment is not None else None
    return MailBody(text=text, html=html)
