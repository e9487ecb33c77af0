"""HTML <-> plain text for mail bodies.

`html_to_text` gives the readable text of an HTML body: the text/plain part of an outgoing mail,
and the `body` of a received one. `text_to_html` gives the `formatted_body` of a plain-text one.

Why not mautrix's `MatrixParser` (mautrix.util.formatter), which renders Matrix HTML to text:
it is async all the way down, and this runs where no event loop is (the parser worker process,
`asyncio.to_thread`); it descends one coroutine per element, so a received mail of a few
thousand nested `<span>`s raises RecursionError (measured: 3,000), where this renderer is
iterative and bounds its prefixes (MAX_MARKED_DEPTH); and it is made for Matrix's HTML subset:
table cells run together ("abcd" for a 2x2 table) and `<style>` text is kept as text, while
mail HTML is tables, `<style>` blocks and a `<div>` per line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
import re

from .html_doc import Handler, HtmlDoc, replay

# Where a browser leaves vertical space the text has a blank line; other blocks start a new line
# (Gmail and others write every line of a mail as a `<div>`).
_BLOCKS = frozenset({
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "ul", "ol", "blockquote", "hr",
    "figure", "dl",
})  # fmt: skip
_LINES = frozenset({
    "div", "section", "article", "header", "footer", "main", "nav", "aside", "address", "center",
    "details", "summary", "li", "tr", "dt", "dd", "caption",
})  # fmt: skip
_SKIP = frozenset({
    "script", "style", "head", "title", "noscript", "template", "svg", "xml", "mx-reply",
})  # fmt: skip
_VOID = frozenset({
    "br", "hr", "img", "wbr", "meta", "link", "input", "col", "area", "base", "source",
})  # fmt: skip
# Every output line repeats its `> ` and list indent prefixes, so unbounded nesting would make the
# output quadratic in the input. Deeper levels are rendered, just not marked any deeper.
MAX_MARKED_DEPTH = 10
_OL_START = re.compile(r"[0-9]{1,9}")  # ASCII only, and short enough for int()
_SPACES = re.compile(r"\s+")


@dataclass(slots=True)
class _List:
    ordered: bool
    next_number: int


@dataclass(slots=True)
class _Link:
    href: str
    label: list[str] = field(default_factory=list)


class _TextRenderer(Handler):
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current = ""
        self.blank_pending: str | None = None  # the quote prefix of a pending blank line
        self.quote_depth = 0
        self.pre_depth = 0
        self.skip_depth = 0
        self.lists: list[_List] = []
        self.links: list[_Link] = []
        self.cells_in_row = 0
        self.cell_separator_pending = False  # written before the row's next text, if any

    # output helpers
    def _quote(self) -> str:
        return "> " * min(self.quote_depth, MAX_MARKED_DEPTH)

    def _prefix(self) -> str:
        return self._quote() + "   " * min(max(0, len(self.lists) - 1), MAX_MARKED_DEPTH)

    def _append(self, line: str) -> None:
        # Runs of blank lines (`<br><br><br>`, Gmail's `<div><br></div>`) collapse to one.
        blank = self._quote().rstrip()
        if self.pre_depth or not self.lines or line != blank or self.lines[-1] != blank:
            self.lines.append(line)

    def _end_line(self, force: bool = False) -> None:
        text = self.current if self.pre_depth else self.current.rstrip()
        if text or force:
            if self.blank_pending is not None and self.lines:
                self._append(self.blank_pending)
            self.blank_pending = None
            line = self._prefix() + text
            self._append(line if self.pre_depth and text else line.rstrip())
        self.current = ""

    def _block(self) -> None:
        self._end_line()
        prefix = self._quote().rstrip()
        if self.blank_pending is None or len(prefix) < len(self.blank_pending):
            self.blank_pending = prefix

    def _write(self, text: str) -> None:
        if self.links:
            self.links[-1].label.append(text)
        self.current += text

    # parser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":  # an unclosed <head> (common in sloppy mail) ends here
            self.skip_depth = 0
        if tag in _SKIP:
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
            start = attr.get("start", "")
            number = int(start) if _OL_START.fullmatch(start) else 1
            self.lists.append(_List(ordered=tag == "ol", next_number=number))
        elif tag == "li":
            if self.lists and self.lists[-1].ordered:
                self.current = f"{self.lists[-1].next_number}. "
                self.lists[-1].next_number += 1
            else:
                self.current = "- "
        elif tag == "tr":
            self.cells_in_row = 0
            self.cell_separator_pending = False
        elif tag in ("td", "th"):
            # Layout tables are full of empty cells: separators only go between cells with text.
            self.cell_separator_pending = self.cells_in_row > 0
            self.cells_in_row += 1
        elif tag == "br":
            self._end_line(force=True)
        elif tag == "hr":
            self.current = "----------"
            self._block()
        elif tag == "img":
            alt = attr.get("alt", "").strip()
            if alt:
                self.handle_data(f"[{alt}]")
        elif tag == "a":
            self.links.append(_Link(attr.get("href", "")))

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
            link = self.links.pop()
            href, label = link.href, "".join(link.label).strip()
            target = href[7:] if href.lower().startswith("mailto:") else href
            # Not when the text already shows the target, nor after a link with no text (an icon,
            # say) or whose text is not on this line.
            shown = bool(label) and bool(self.current) and target not in label
            if shown and href.lower().startswith(("http:", "https:", "mailto:")):
                self._write(f" <{href}>")
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
        data = _SPACES.sub(" ", data)
        if self.cell_separator_pending and data.strip():
            self.cell_separator_pending = False
            if self.current:
                self._write("| " if self.current.endswith(" ") else " | ")
        # At the start of a line, or after a list marker ("- ", "3. "), which end in a space.
        if not self.current or self.current.endswith(" "):
            data = data.lstrip()
        self._write(data)

    def result(self) -> str:
        self._end_line()
        return "\n".join(self.lines).strip("\n")


def html_to_text(html: str | HtmlDoc) -> str:
    """Plain-text rendering: paragraphs separated by one blank line, `> ` quotes, `- ` and
    numbered list items, table cells joined by ` | `, links as `text <url>`, images as `[alt]`;
    scripts, styles and Matrix reply fallbacks dropped."""
    renderer = _TextRenderer()
    replay(HtmlDoc.of(html), renderer)
    return renderer.result()


_URL = re.compile(
    r"(?:https?|ftp)://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]|mailto:[^\s<>\"']+[^\s<>\"'.,;:!?)\]]"
)
_QUOTE_MARKS = re.compile(r"^((?:\s*>)+)\s?")


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
