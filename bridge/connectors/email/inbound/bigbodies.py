"""Big part bodies kept out of the stdlib MIME parser, decoded straight from the raw mail.

The stdlib parser holds a body as a list of line strings, then as one string, then (to decode
it) as bytes, a list of byte lines and their join: a 24 MiB attachment cost the parser worker
~14 times its size. Here, before the parse, each long run of body lines is replaced by one token
line; the stdlib parses the small skeleton. A part whose whole body is one token is decoded from
the raw bytes (base64 in chunks, into a file if the caller wants one); any other token is put
back as the original text, so every result is exactly what the stdlib would have produced.

A run never holds a line the parser would read as structure: it starts after an empty line (the
end of a header block), not on a line that looks like a header (the nested message of a
message/rfc822 part), and ends before the next line starting with `--` (any boundary).
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
import os
import re
from typing import BinaryIO

from .mimeparts import content_type, decoded_payload

# Bodies shorter than this go through the stdlib parser as before.
BIG_BODY_BYTES = 64 * 1024
_CHUNK = 1024 * 1024
_DASH_LINE = re.compile(rb"(?:\A|(?<=[\r\n]))--")
_EOL = rb"(?:\r\n|\n|\r(?!\n))"
_BLANK_LINE = re.compile(_EOL + _EOL)
_FINAL_EOL = re.compile(_EOL + rb"\Z")
# feedparser's headerRE: a line the parser would take as a header (or a Unix From line).
_HEADER_LIKE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_CLEAN_BASE64 = re.compile(rb"[A-Za-z0-9+/\r\n]*(?:=[\r\n]*){0,2}")
# How many nested messages (message/rfc822 in message/rfc822) a run may start behind.
_MAX_NESTED_HEADERS = 4
# Parts whose bodies other code reads through the stdlib (reports, embedded messages).
_STDLIB_READ = ("message/", "multipart/", "text/rfc822-headers")
_STDLIB_DECODED = ("base64", "x-uuencode", "uuencode", "uue", "x-uue")


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    # The run's text without its final line ending, which belongs to the boundary line after
    # it (at the end of the mail, whether it belongs to the body depends on the structure).
    end: int


class BigBodies:
    """The skeleton of `raw` for the stdlib parser, and the raw bodies behind its tokens."""

    def __init__(self, raw: bytes, min_bytes: int = BIG_BODY_BYTES) -> None:
        self.raw = raw
        self.spans: dict[str, _Span] = {}
        self._parts: dict[int, _Span] = {}
        self.nonce = os.urandom(8).hex()
        while self.nonce.encode() in raw:  # never a token the mail itself contains
            self.nonce = os.urandom(8).hex()
        self._runs = list(_runs(raw, min_bytes))

    def skeleton(self) -> Iterator[bytes]:
        """The mail with each run replaced by its token, in pieces of at most 1 MiB."""
        view = memoryview(self.raw)
        pos = 0
        for index, span in enumerate(self._runs):
            yield from _pieces(view, pos, span.start)
            token = f"LBXBODY{self.nonce}X{index}X"
            self.spans[token] = span
            yield token.encode()
            pos = span.end
        yield from _pieces(view, pos, len(self.raw))

    def _text(self, span: _Span) -> str:
        return self.raw[span.start : span.end].decode("ascii", "surrogateescape")

    def _restore(self, text: str) -> str:
        for token, span in self.spans.items():
            if token in text:
                text = text.replace(token, self._text(span))
        return text

    def adopt(self, msg: Message) -> None:
        """After the parse: keep big leaf bodies that this module decodes itself as tokens,
        and put the original text back everywhere else."""
        if not self.spans:
            return
        stack: list[tuple[Message, bool]] = [(msg, False)]
        while stack:
            part, in_message = stack.pop()
            for attr in ("preamble", "epilogue"):
                value = getattr(part, attr, None)
                if isinstance(value, str) and self.nonce in value:
                    setattr(part, attr, self._restore(value))
            # The payload as parsed (get_payload() would decode 8-bit text by its charset).
            payload = vars(part).get("_payload")
            if isinstance(payload, list):
                nested = in_message or content_type(part).startswith("message/")
                stack.extend((child, nested) for child in payload if isinstance(child, Message))
            elif isinstance(payload, str) and self.nonce in payload:
                span = self._whole_body(payload)
                if span is not None and not in_message and not content_type(part).startswith(
                    _STDLIB_READ
                ):
                    self._parts[id(part)] = span
                else:
                    part.set_payload(self._restore(payload))

    def _whole_body(self, payload: str) -> _Span | None:
        """The span of a body that is one token: exactly, or (the body of a single-part mail)
        followed by the line ending that ends the mail."""
        span = self.spans.get(payload)
        if span is not None:
            return span
        token = payload.rstrip("\r\n")
        span = self.spans.get(token)
        rest = payload[len(token) :].encode()
        if span is None or len(self.raw) - span.end != len(rest) or len(rest) > 2:
            return None
        return _Span(span.start, len(self.raw)) if self.raw.endswith(rest) else None

    def owns(self, part: Message) -> bool:
        return id(part) in self._parts

    def decoded(self, part: Message) -> bytes:
        """The transfer-decoded body of a part this module kept (see `owns`), as the stdlib's
        `get_payload(decode=True)` would give it."""
        span = self._parts[id(part)]
        cte = _cte(part)
        if cte == "base64" and _clean_base64(self.raw, span):  # line breaks are skipped
            return binascii.a2b_base64(memoryview(self.raw)[span.start : span.end])
        if cte == "quoted-printable":  # what quopri.decodestring does, without a copy of the body
            return binascii.a2b_qp(memoryview(self.raw)[span.start : span.end])
        if cte in _STDLIB_DECODED:
            # Rare forms (base64 with stray characters or bad padding, uuencode): the stdlib's
            # own lenient decoding of the original text.
            self.release(part)
            return decoded_payload(part)
        return self.raw[span.start : span.end]

    def write_decoded(self, part: Message, sink: BinaryIO) -> int:
        """Write the decoded body of a kept part to `sink` (clean base64 piece by piece, never
        whole in memory); returns the number of bytes written."""
        span = self._parts[id(part)]
        if _cte(part) == "base64" and _clean_base64(self.raw, span):
            return sum(sink.write(piece) for piece in _base64_pieces(self.raw, span))
        return sink.write(self.decoded(part))

    def release(self, part: Message) -> None:
        """Give a kept part its original text back (it is then an ordinary stdlib part)."""
        span = self._parts.pop(id(part))
        part.set_payload(self._text(span))


def _cte(part: Message) -> str:
    return str(part.get("content-transfer-encoding", "")).lower()


def _clean_base64(raw: bytes, span: _Span) -> bool:
    """Only the alphabet, padding at the very end, and whole groups of four: then decoding it
    piece by piece gives exactly what decoding it at once does."""
    view = memoryview(raw)[span.start : span.end]
    if _CLEAN_BASE64.fullmatch(view) is None:
        return False
    breaks = raw.count(b"\n", span.start, span.end) + raw.count(b"\r", span.start, span.end)
    return (span.end - span.start - breaks) % 4 == 0


def _base64_pieces(raw: bytes, span: _Span) -> Iterator[bytes]:
    carry = b""
    for pos in range(span.start, span.end, _CHUNK):
        piece = carry + raw[pos : min(pos + _CHUNK, span.end)].translate(None, b"\r\n")
        cut = len(piece) - len(piece) % 4
        carry = piece[cut:]
        yield binascii.a2b_base64(piece[:cut])


def _pieces(view: memoryview, start: int, end: int) -> Iterator[bytes]:
    for pos in range(start, end, _CHUNK):
        yield bytes(view[pos : min(pos + _CHUNK, end)])


def _runs(raw: bytes, min_bytes: int) -> Iterator[_Span]:
    """Runs of body lines of at least `min_bytes`, in order (see the module docstring)."""
    starts = [m.start() for m in _DASH_LINE.finditer(raw)]
    bounds = zip([0, *starts], [*starts, len(raw)], strict=True)
    for seg_start, seg_end in bounds:
        if seg_end - seg_start < min_bytes:
            continue
        span = _body_run(raw, seg_start, seg_end)
        if span is not None and span.end - span.start >= min_bytes:
            yield span


def _body_run(raw: bytes, pos: int, end: int) -> _Span | None:
    for _ in range(_MAX_NESTED_HEADERS):
        blank = _BLANK_LINE.search(raw, pos, end)
        if blank is None:
            return None
        start = blank.end()
        while start < end and raw[start] in b"\r\n":  # further empty lines stay outside
            start += 1
        if start >= end:
            return None
        if _HEADER_LIKE.match(raw, start, end):
            pos = start  # a nested message's headers: its body starts after them
            continue
        final = _FINAL_EOL.search(raw, max(start, end - 2), end)
        return _Span(start, final.start() if final else end)
    return None
