"""Plain text <-> HTML for message bodies (the `body` fallback and HTML built from plain text)."""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser

_BLOCK = frozenset({
    "p", "div", "table", "tr", "ul", "ol", "blockquote", "pre", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "details", "summary", "section", "article", "header", "footer", "center", "dl",
    "dt", "dd",
})  # fmt: skip
_SKIP = frozenset({"script", "style", "head", "title", "noscript", "template", "svg", "xml"})
_URL = re.compile(
    r"(?:https?|ftp)://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]|mailto:[^\s<>\"']+[^\s<>\"'.,;:!?)\]]"
)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0
        self.links: list[str | None] = []

    def _newline(self, count: int = 1) -> None:
        text = "".join(self.parts[-3:])
        have = len(text) - len(text.rstrip("\n"))
        if self.parts and have < count:
            self.parts.append("\n" * (count - have))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif self.skip:
            return
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self._newline()
            self.parts.append("• ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and alt.strip():
                self.parts.append(f"[{alt.strip()}]")
        elif tag == "a":
            self.links.append(dict(attrs).get("href"))
        elif tag in _BLOCK:
            self._newline(2 if tag in ("p", "blockquote", "pre", "table", "hr") else 1)
            if tag == "pre":
                self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _SKIP:
            self.skip -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif self.skip:
            return
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href and href.startswith(("http://", "https://")):
                last = self.parts[-1] if self.parts else ""
                if href not in last and last.strip():
                    self.parts.append(f" <{href}>")
        elif tag in _BLOCK:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            self._newline(2 if tag in ("p", "blockquote", "pre", "table") else 1)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if not self.pre:
            data = re.sub(r"[ \t\r\n\f]+", " ", data)
        self.parts.append(data)


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body (links kept as `<url>`, scripts and styles dropped)."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    text = "".join(extractor.parts).replace("\u00a0", " ")
    lines = [line.strip(" ") for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _inline_html(text: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _URL.finditer(text):
        out.append(escape(text[pos : match.start()], quote=False))
        url = match.group(0)
        out.append(f'<a href="{escape(url, quote=True)}">{escape(url, quote=False)}</a>')
        pos = match.end()
    out.append(escape(text[pos:], quote=False))
    return "".join(out).replace("\n", "<br>")


_QUOTE_MARKS = re.compile(r"^((?:\s*>)+)\s?")


def text_to_html(text: str) -> str:
    """Escaped plain text for `formatted_body`: line breaks, clickable links, and `>` quoted
    lines as (nested) blockquotes."""
    out: list[str] = []
    depth = 0
    run: list[str] = []

    def flush() -> None:
        if run:
            out.append(_inline_html("\n".join(run)))
            run.clear()

    for line in text.split("\n"):
        match = _QUOTE_MARKS.match(line)
        level = match.group(1).count(">") if match else 0
        if level != depth:
            flush()
            while depth < level:
                out.append("<blockquote>")
                depth += 1
            while depth > level:
                out.append("</blockquote>")
                depth -= 1
        run.append(line[match.end() :] if match else line)
    flush()
    out.append("</blockquote>" * depth)
    return "".join(out)
