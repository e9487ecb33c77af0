"""Email HTML -> Matrix `formatted_body`, restricted to the client-server spec's allow-list.

nh3 does the parsing and the first cut (tags, attributes, link schemes, script/style contents);
a second pass over its well-formed output (`rebuild`) removes images left without a source and
re-applies the allow-list, so what is sent never depends on one library's defaults alone.

Images: only `cid:` references to parts of the same mail survive, rewritten to the placeholder
URL of their upload. Remote images are dropped: loading them would tell the sender when and where
the mail was read (tracking pixels), and Matrix only allows `mxc://` sources anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
import re
from urllib.parse import unquote

import nh3

from ..html_doc import Handler, HtmlDoc, replay

ALLOWED_TAGS = frozenset(
    {
        "font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol",
        "sup", "sub", "li", "b", "i", "u", "strong", "em", "s", "code", "hr", "br", "div",
        "table", "thead", "tbody", "tr", "th", "td", "caption", "pre", "span", "img", "details",
        "summary",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "font": frozenset({"data-mx-bg-color", "data-mx-color", "color"}),
    "span": frozenset({"data-mx-bg-color", "data-mx-color", "data-mx-spoiler", "data-mx-maths"}),
    "div": frozenset({"data-mx-maths"}),
    "a": frozenset({"target", "href"}),
    "img": frozenset({"width", "height", "alt", "title", "src"}),
    "ol": frozenset({"start"}),
    "code": frozenset({"class"}),
}
LINK_SCHEMES = frozenset({"http", "https", "ftp", "mailto", "magnet"})
VOID_TAGS = frozenset({"br", "hr", "img"})
# Removed together with everything inside them (not shown as text).
_DROP_WITH_CONTENT = {
    "script", "style", "title", "head", "noscript", "template", "iframe", "object", "embed",
    "svg", "math", "select", "textarea", "button", "audio", "video", "canvas", "xml",
}  # fmt: skip
_COLOR = re.compile(r"^(#[0-9A-Fa-f]{3}|#[0-9A-Fa-f]{6}|[A-Za-z]{3,20})$")
_HEX_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")
_NUMBER = re.compile(r"^\d{1,5}$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
MXC_PREFIX = "mxc://"


def link_allowed(url: str) -> bool:
    match = _SCHEME.match(url.strip())
    return match is not None and match.group(1).lower() in LINK_SCHEMES


def _attribute_value(tag: str, attr: str, value: str, cids: Mapping[str, str]) -> str | None:
    if attr not in ALLOWED_ATTRIBUTES.get(tag, ()):
        return None
    if tag == "a" and attr == "href":
        return value.strip() if link_allowed(value) else None
    if tag == "a" and attr == "target":
        return "_blank" if value == "_blank" else None
    if tag == "img" and attr == "src":
        if not value.lower().startswith("cid:"):
            return value if value.startswith(MXC_PREFIX) else None
        return cids.get(unquote(value[4:]).strip().strip("<>").lower())
    if attr in ("width", "height", "start"):
        return value.strip() if _NUMBER.match(value.strip()) else None
    if tag == "code" and attr == "class":
        classes = [
            c for c in value.split() if c.startswith("language-") and re.fullmatch(r"[\w\-+#.]+", c)
        ]
        return " ".join(classes) or None
    if attr in ("data-mx-color", "data-mx-bg-color"):
        return value if _HEX_COLOR.match(value) else None
    if attr == "color":
        return value.strip() if _COLOR.match(value.strip()) else None
    return value


class _Full(Exception):
    """Raised inside `_Rebuilder` once the budget is used up."""


class _Rebuilder(Handler):
    """Re-serialises sanitised HTML, enforcing the allow-list once more.

    With `budget` set, stops at the last block boundary that keeps the output within that many
    characters and closes the open tags, so a long mail can be cut without breaking the markup.
    """

    _BLOCK_END = frozenset({"p", "div", "li", "tr", "table", "blockquote", "pre", "ul", "ol",
                            "h1", "h2", "h3", "h4", "h5", "h6", "details", "br", "hr"})  # fmt: skip

    def __init__(self, budget: int | None) -> None:
        self.out: list[str] = []
        self.size = 0
        self.stack: list[str] = []
        self.budget = budget
        # (output pieces, size, open tags) at the last place the output may end.
        self.safe_point: tuple[int, int, list[str]] = (0, 0, [])
        self.truncated = False

    def _emit(self, text: str) -> None:
        if self.truncated:
            return
        self.out.append(text)
        self.size += len(text)
        if self.budget is not None and self.size + self._closing_size() > self.budget:
            self._cut()

    def _closing_size(self) -> int:
        return sum(len(t) + 3 for t in self.stack)

    def _cut(self) -> None:
        self.truncated = True
        count, size, stack = self.safe_point
        del self.out[count:]
        self.size = size
        self.stack = list(stack)
        raise _Full  # nothing after this point can be used: stop parsing

    def _mark_safe(self) -> None:
        if self.budget is not None and not self.truncated:
            self.safe_point = (len(self.out), self.size, list(self.stack))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS or self.truncated:
            return
        allowed = ALLOWED_ATTRIBUTES.get(tag, frozenset())
        kept = [(k, v) for k, v in attrs if k in allowed and v is not None]
        if tag == "img":
            values = dict(kept)
            if not values.get("src", "").startswith(MXC_PREFIX):
                return
            if any(values.get(d, "9").strip() in ("0", "1", "2") for d in ("width", "height")):
                return  # a spacer or pixel: nothing to look at
        if tag == "a":
            kept = [(k, v) for k, v in kept if k != "href" or link_allowed(v)]
        rendered = "".join(f' {k}="{escape(v, quote=True)}"' for k, v in kept)
        self._emit(f"<{tag}{rendered}>")
        if tag in VOID_TAGS:
            if tag in self._BLOCK_END:
                self._mark_safe()
        else:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag not in ALLOWED_TAGS or tag in VOID_TAGS or self.truncated or tag not in self.stack:
            return
        while self.stack:
            open_tag = self.stack.pop()
            self._emit(f"</{open_tag}>")
            if open_tag == tag:
                break
        if tag in self._BLOCK_END:
            self._mark_safe()

    def handle_data(self, data: str) -> None:
        self._emit(escape(data, quote=False))

    def result(self) -> str:
        closing = "".join(f"</{t}>" for t in reversed(self.stack))
        return "".join(self.out) + closing


def rebuild(html: str | HtmlDoc, budget: int | None = None) -> tuple[str, bool]:
    """(allow-listed HTML, whether it was cut to fit `budget` characters)."""
    rebuilder = _Rebuilder(budget)
    try:
        replay(HtmlDoc.of(html), rebuilder)
    except _Full:
        pass
    return rebuilder.result(), rebuilder.truncated


_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|max-height\s*:\s*0(px)?\s*[;!].*overflow\s*:\s*hidden",
    re.IGNORECASE | re.DOTALL,
)
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed",
                   "param", "source", "track", "wbr"})  # fmt: skip


class _HiddenFinder(Handler):
    """Character ranges of elements styled invisible (newsletter "preheaders" and the like)."""

    def __init__(self, html: str) -> None:
        self.html = html
        self.stack: list[tuple[str, int, bool]] = []
        self.ranges: list[tuple[int, int]] = []

    def _offset(self) -> int:
        return self.offset

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        style = next((v or "" for k, v in attrs if k == "style"), "")
        self.stack.append((tag, self._offset(), bool(_HIDDEN_STYLE.search(style))))

    def handle_endtag(self, tag: str) -> None:
        if not any(t == tag for t, _, _ in self.stack):
            return
        offset = self._offset()
        end = self.html.find(">", offset)
        end = len(self.html) if end < 0 else end + 1
        while self.stack:
            open_tag, start, hidden = self.stack.pop()
            if hidden:
                self.ranges.append((start, end))
            if open_tag == tag:
                break


def remove_hidden(html: str) -> str:
    """`html` without elements styled `display:none` (only ones that are properly closed)."""
    if not _HIDDEN_STYLE.search(html):
        return html
    return remove_hidden_doc(HtmlDoc.of(html)).text


def remove_hidden_doc(doc: HtmlDoc) -> HtmlDoc:
    """`remove_hidden` on a document: itself when nothing is hidden, else the rest, anew."""
    html = doc.text
    if not _HIDDEN_STYLE.search(html):
        return doc
    finder = _HiddenFinder(html)
    replay(doc, finder)
    if not finder.ranges:
        return doc
    out: list[str] = []
    pos = 0
    for start, end in sorted(finder.ranges):
        if start < pos:
            continue  # nested in a range already removed
        out.append(html[pos:start])
        pos = end
    out.append(html[pos:])
    return HtmlDoc.of("".join(out))


def sanitize_html(html: str | HtmlDoc, cid_urls: Mapping[str, str] | None = None) -> str:
    """Sanitise email HTML for `formatted_body`.

    `cid_urls` maps lower-case content ids (without angle brackets) to the URL to show instead;
    images referencing anything else are removed.
    """
    cids = cid_urls or {}
    visible = remove_hidden_doc(html).text if isinstance(html, HtmlDoc) else remove_hidden(html)
    cleaned = nh3.clean(
        visible,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=_DROP_WITH_CONTENT,
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=lambda tag, attr, value: _attribute_value(tag, attr, value, cids),
        url_schemes=set(LINK_SCHEMES) | {"cid"},
        link_rel=None,
        strip_comments=True,
    )
    result, _ = rebuild(cleaned)
    return _tidy(result)


_EMPTY_BLOCK = re.compile(r"<(p|div|span|font|b|i|u|strong|em)>(\s|&nbsp;|\u00a0)*</\1>")
_BLANK_RUN = re.compile(r"(<br>\s*){3,}")
_WS_RUN = re.compile(r"[ \t\r\n]{2,}")
_BLANK_UNIT = r"(?:\s|<br>|<(?:p|div)>(?:\s|<br>)*</(?:p|div)>)"
_LEADING_BLANK = re.compile(rf"^{_BLANK_UNIT}+")
# One unit at a time, searched near the end only: a "+" here backtracks quadratically.
_TRAILING_BLANK = re.compile(rf"{_BLANK_UNIT}\Z")


def _tidy(html: str) -> str:
    """Drop empty wrapper elements and runs of blank lines that email layouts leave behind."""
    for _ in range(8):  # nested empty wrappers; bounded, the markup may be hostile
        previous, html = html, _EMPTY_BLOCK.sub("", html)
        if html == previous:
            break
    html = _BLANK_RUN.sub("<br><br>", html)
    # Whitespace between tags is insignificant outside <pre>; keep <pre> blocks verbatim.
    parts = re.split(r"(<pre>.*?</pre>)", html, flags=re.DOTALL)
    html = "".join(
        p
        if p.startswith("<pre>")
        else _WS_RUN.sub(lambda m: "\n" if "\n" in m.group(0) else " ", p)
        for p in parts
    ).strip()
    # Blank lines before the first and after the last text ("<div><br></div>" from webmail).
    html = _LEADING_BLANK.sub("", html, count=1)
    end = len(html)
    while (match := _TRAILING_BLANK.search(html, max(0, end - 200), end)) and match.start() < end:
        end = match.start()
    return html[:end]
