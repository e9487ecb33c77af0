"""Render (sanitised) HTML as readable plain text for the text/plain part of a mail."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCKS = {
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "table",
    "ul",
    "ol",
    "blockquote",
    "details",
    "summary",
    "hr",
    "figure",
    "section",
    "article",
    "header",
    "footer",
    "dl",
}
_LINES = {"li", "tr", "dt", "dd", "caption"}
_SKIP = {"script", "style", "head", "title", "mx-reply", "template"}
_VOID = {"br", "hr", "img", "wbr", "meta", "link", "input", "col", "area", "base", "source"}


class _TextRenderer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current = ""
        self.blank_pending: str | None = None  # the quote prefix of a pending blank line
        self.quote_depth = 0
        self.pre_depth = 0
        self.skip_depth = 0
        self.lists: list[list] = []  # [kind, next number]
        self.links: list[tuple[str, list[str]]] = []
        self.cells_in_row = 0

    # output helpers
    def _prefix(self) -> str:
        quote = "> " * self.quote_depth
        indent = "   " * max(0, len(self.lists) - 1)
        return quote + indent

    def _end_line(self, force: bool = False) -> None:
        text = self.current if self.pre_depth else self.current.rstrip()
        if text or force:
            if self.blank_pending is not None and self.lines:
                self.lines.append(self.blank_pending)
            self.blank_pending = None
            self.lines.append(
                (self._prefix() + text).rstrip() if not self.pre_depth else self._prefix() + text
            )
        self.current = ""

    def _block(self) -> None:
        self._end_line()
        prefix = ("> " * self.quote_depth).rstrip()
        if self.blank_pending is None or len(prefix) < len(self.blank_pending):
            self.blank_pending = prefix

    def _write(self, text: str) -> None:
        if self.links:
            self.links[-1][1].append(text)
        self.current += text

    # parser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            if tag not in _VOID:
                self.skip_depth += 1
            return
        if self.skip_depth:
            return
        attr = {k: v or "" for k, v in attrs}
        if tag in _BLOCKS and not (tag in ("ul", "ol") and self.lists):
            self._block()
        elif tag in _LINES or tag in ("ul", "ol"):
            self._end_line()
        if tag == "blockquote":
            self.quote_depth += 1
        elif tag == "pre":
            self.pre_depth += 1
        elif tag in ("ul", "ol"):
            start = attr.get("start", "1")
            self.lists.append([tag, int(start) if start.isdigit() else 1])
        elif tag == "li":
            if self.lists and self.lists[-1][0] == "ol":
                self.current = f"{self.lists[-1][1]}. "
                self.lists[-1][1] += 1
            else:
                self.current = "- "
        elif tag == "tr":
            self.cells_in_row = 0
        elif tag in ("td", "th"):
            if self.cells_in_row:
                self._write(" | ")
            self.cells_in_row += 1
        elif tag == "br":
            self._end_line(force=True)
        elif tag == "hr":
            self.current = "----------"
            self._block()
        elif tag == "img":
            alt = attr.get("alt", "").strip()
            if alt:
                self.handle_data(alt)
        elif tag == "a":
            self.links.append((attr.get("href", ""), []))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth:
            return
        if tag == "a" and self.links:
            href, parts = self.links.pop()
            label = "".join(parts).strip()
            target = href[7:] if href.lower().startswith("mailto:") else href
            if href and target != label and href.lower().startswith(("http:", "https:", "mailto:")):
                self._write(f" <{href}>" if label else href)
        elif tag == "blockquote":
            self._end_line()
            self.quote_depth = max(0, self.quote_depth - 1)
            self._block()
        elif tag == "pre":
            self._end_line()
            self.pre_depth = max(0, self.pre_depth - 1)
            self._block()
        elif tag in ("ul", "ol"):
            self._end_line()
            if self.lists:
                self.lists.pop()
            if not self.lists:
                self._block()
        elif tag in _BLOCKS:
            self._block()
        elif tag in _LINES:
            self._end_line()

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.pre_depth:
            first, *rest = data.split("\n")
            self._write(first)
            for line in rest:
                self._end_line(force=True)
                self._write(line)
            return
        data = re.sub(r"\s+", " ", data)
        if (
            not self.current
            or self.current.endswith((" ", "- "))
            or re.fullmatch(r"\d+\. ", self.current)
        ):
            data = data.lstrip()
        self._write(data)

    def result(self) -> str:
        self.close()
        self._end_line()
        return "\n".join(self.lines).strip("\n")


def html_to_text(html: str) -> str:
    """Plain-text rendering: paragraphs separated by blank lines, `> ` quotes, `- ` list items,
    links as `text <url>`."""
    renderer = _TextRenderer()
    renderer.feed(html)
    return renderer.result()
