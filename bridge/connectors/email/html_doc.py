"""One tokenisation of an HTML string, replayed to every pass that reads it.

A received mail's HTML is read by several passes: hidden elements, quote folding (the quote
markup and the visible lines), the plain-text rendering and the sanitiser. Each used to run its
own `html.parser` over the same text. `HtmlDoc.of(html)` runs the stdlib tokenizer once and
records what it reported (with the source offset of each construct); `replay` hands that record
to a pass exactly as the parser would have (same calls, same order, `handler.offset` set to what
`getpos()` would have said).

Parts of a document cut at the start of a construct (the halves of a quote split) share the
record: tokenizing the part anew reports the same constructs, so `prefix` and `suffix` slice it
instead. A cut anywhere else is tokenized anew.

`on_tokenize` lists callbacks told of each tokenisation (tests count them).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from html.parser import HTMLParser
import re

Attrs = list[tuple[str, str | None]]
# (kind, tag or text, attributes, source offset); kinds: start, startend, end, data, other
Event = tuple[str, str, Attrs | None, int]

on_tokenize: list[Callable[[str], None]] = []


class Handler:
    """What `replay` calls; by default nothing, and a self-closing tag is a start and an end
    tag (as `html.parser.HTMLParser` does). `offset`: where the current construct starts."""

    offset: int = 0

    def handle_starttag(self, tag: str, attrs: Attrs) -> None:
        pass

    def handle_startendtag(self, tag: str, attrs: Attrs) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        pass

    def handle_data(self, data: str) -> None:
        pass


class _Recorder(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.line_offsets = [0] + [m.end() for m in re.finditer("\n", html)]
        self.events: list[Event] = []

    def _offset(self) -> int:
        line, col = self.getpos()
        return self.line_offsets[line - 1] + col

    def handle_starttag(self, tag: str, attrs: Attrs) -> None:
        self.events.append(("start", tag, attrs, self._offset()))

    def handle_startendtag(self, tag: str, attrs: Attrs) -> None:
        self.events.append(("startend", tag, attrs, self._offset()))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag, None, self._offset()))

    def handle_data(self, data: str) -> None:
        self.events.append(("data", data, None, self._offset()))

    # Constructs no pass reads; recorded so that a cut at one is known to be at a construct.
    def handle_comment(self, data: str) -> None:
        self.events.append(("other", "", None, self._offset()))

    def handle_decl(self, decl: str) -> None:
        self.events.append(("other", "", None, self._offset()))

    def handle_pi(self, data: str) -> None:
        self.events.append(("other", "", None, self._offset()))

    def unknown_decl(self, data: str) -> None:
        self.events.append(("other", "", None, self._offset()))

    def handle_entityref(self, name: str) -> None:  # not called with convert_charrefs
        raise AssertionError(name)

    handle_charref = handle_entityref


class HtmlDoc:
    """An HTML string and the constructs the stdlib tokenizer reports for it."""

    __slots__ = ("_starts", "events", "text")

    def __init__(self, text: str, events: list[Event]) -> None:
        self.text = text
        self.events = events
        self._starts = [e[3] for e in events]

    @classmethod
    def of(cls, html: str | HtmlDoc) -> HtmlDoc:
        if isinstance(html, HtmlDoc):
            return html
        recorder = _Recorder(html)
        recorder.feed(html)
        recorder.close()
        for callback in on_tokenize:
            callback(html)
        return cls(html, recorder.events)

    def _index(self, offset: int) -> int | None:
        """The index of the construct starting at `offset` (len(events) at the end), if any."""
        if offset == len(self.text):
            return len(self.events)
        index = bisect_left(self._starts, offset)
        if index < len(self._starts) and self._starts[index] == offset:
            return index
        return None

    def prefix(self, offset: int) -> HtmlDoc:
        """`text[:offset]` as a document."""
        index = self._index(offset)
        if offset == len(self.text):
            return self
        if index is None:
            return HtmlDoc.of(self.text[:offset])
        return HtmlDoc(self.text[:offset], self.events[:index])

    def suffix(self, offset: int) -> HtmlDoc:
        """`text[offset:]` as a document."""
        index = self._index(offset)
        if offset == 0:
            return self
        if index is None:
            return HtmlDoc.of(self.text[offset:])
        return HtmlDoc(
            self.text[offset:],
            [(kind, value, attrs, at - offset) for kind, value, attrs, at in self.events[index:]],
        )


def replay(doc: HtmlDoc, handler: Handler) -> None:
    """Call `handler` as `html.parser` would while parsing `doc.text` (exceptions propagate:
    a handler may stop the replay by raising)."""
    for kind, value, attrs, offset in doc.events:
        handler.offset = offset
        if kind == "data":
            handler.handle_data(value)
        elif kind == "start":
            assert attrs is not None
            handler.handle_starttag(value, attrs)
        elif kind == "end":
            handler.handle_endtag(value)
        elif kind == "startend":
            assert attrs is not None
            handler.handle_startendtag(value, attrs)
