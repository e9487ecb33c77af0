"""Separating what the sender wrote from quoted history, forwarded mail and signatures.

The stripped part is not thrown away: `convert` puts it in a collapsed
`<details><summary>…</summary>…</details>` section at the end of `formatted_body` (and keeps it in
the plain `body`). That keeps the whole mail in the one event (no second event to thread, redact
or lose), Element renders it as a closed disclosure the reader can open with one click, and it
costs no media upload. The full raw message is only attached separately when the event would be
too large.

Plain text follows the reply-trimmer conventions (Discourse email_reply_trimmer test
expectations): a trailing `>` block and the "On … wrote:" line before it, "-----Original
Message-----" and forwarded-message delimiters, embedded From:/Sent:/To:/Subject: header blocks
(with the labels Outlook writes in the common European and Asian languages), the `-- ` signature
delimiter and trailing "Sent from my phone" lines. A bottom-posted reply ("On … wrote:" and the
quote on top, the answer below and nothing quoted after it) has its leading quote folded.
Quotes interleaved with replies are left alone.

HTML is cut at the first element that marks quoted material (gmail_quote, blockquote type=cite,
Outlook's reply header, Thunderbird's cite prefix, …) when nothing substantial follows it, or
where the plain-text rules find a quote in the HTML's visible lines (AOL, Zimbra/Comcast, old
Outlook and Hotmail write their quote headers as text), whichever comes first. A cited quote
that opens the mail, followed by the answer, is a bottom-posted reply.

Why not a library: quotequail (the maintained one with HTML support) keeps header blocks such as
Outlook's From:/Sent:/To: and every localized one visible, and mail-parser-reply works on plain
text only; neither folds bottom-posted replies or tells a signature from a quote. Both were
measured on tests/corpus (replies-quoting, client-replies) against these rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
import re

from ..html_doc import Handler, HtmlDoc, replay

QUOTE = "quote"
FORWARD = "forward"
SIGNATURE = "signature"

SUMMARIES = {QUOTE: "Quoted text", FORWARD: "Forwarded message", SIGNATURE: "Signature"}
MAX_SPLIT_CHARS = 200_000


@dataclass(frozen=True, slots=True)
class Split:
    """`kept` is what the sender wrote; `stripped` (possibly empty) the rest, of kind `kind`.

    `leading`: the stripped part came before the kept one (a bottom-posted reply: the quote on
    top, the answer below it).
    """

    kept: str
    stripped: str = ""
    kind: str = QUOTE
    leading: bool = False
    # For an HTML split: the halves as documents (sharing the whole's tokenisation).
    kept_doc: HtmlDoc | None = field(default=None, compare=False, repr=False)
    stripped_doc: HtmlDoc | None = field(default=None, compare=False, repr=False)


_WROTE = re.compile(
    r"\b(wrote|writes|a écrit|a ecrit|schrieb|escribió|escribio|scrisse|ha scritto|schreef|"
    r"het volgende geschreven|skrev|escreveu|napisał|napisała|napsal|написал|написала|"
    r"написал\(а\)|kirjoitti|írta|yazdı|kirjutas|rašė|rakstīja|έγραψε)\b"
    r"|写道|寫道|書きました|님이 작성",
    re.IGNORECASE,
)
_HEADER_START = re.compile(
    r"^\s*(On|Am|Le|El|Il|Op|Den|Em|W dniu|Dne|På|Pe|В|Dana|Ngày|\d)", re.IGNORECASE
)
_DELIMITER = re.compile(
    r"^\s*(-{2,}|_{2,}|={2,})?\s*("
    r"original message|forwarded message|ursprüngliche nachricht|weitergeleitete nachricht|"
    r"originalnachricht|message d'origine|message transféré|mensaje original|mensaje reenviado|"
    r"messaggio originale|messaggio inoltrato|oorspronkelijk bericht|doorgestuurd bericht|"
    r"original meddelelse|videresendt meddelelse|ursprungligt meddelande|"
    r"vidarebefordrat meddelande|"
    r"alkuperäinen viesti|исходное сообщение|пересланное сообщение|mensagem original|"
    r"mensagem encaminhada|wiadomość oryginalna|oryginalna wiadomość|původní zpráva"
    r")\s*(-{2,}|_{2,}|={2,})?\s*:?\s*$",
    re.IGNORECASE,
)
_FORWARD_WORDS = re.compile(
    r"forward|weitergeleitet|transféré|reenviado|inoltrato|doorgestuurd|"
    r"videresendt|vidarebefordrat|пересланное|encaminhada",
    re.IGNORECASE,
)
_BEGIN_FORWARD = re.compile(
    r"^\s*(begin forwarded message|anfang der weitergeleiteten nachricht|"
    r"début du message réexpédié|inicio del mensaje reenviado)\s*:?\s*$",
    re.IGNORECASE,
)
_RULE = re.compile(r"^\s*[-_=*~]{10,}\s*$")
_SIG_DELIMITER = re.compile("^--[ \u00a0]?$")
# Header labels of the quoted mail's block, as mail clients write them per language (English,
# German, French, Spanish, Portuguese, Dutch, Italian, Danish/Norwegian, Swedish, Polish, Czech,
# Finnish, Hungarian, Turkish, Russian, Japanese, Chinese).
_FROM_LABELS = (
    "from|von|de|van|da|fra|från|od|lähettäjä|feladó|kimden|от|差出人|发件人|寄件者"
)
_HEADER_LABELS = (
    _FROM_LABELS + "|sent|date|to|cc|subject|reply-to|gesendet|datum|an|betreff|envoyé|à|objet|"
    "enviado|enviado el|enviado em|enviada em|para|asunto|fecha|assunto|data|verzonden|aan|"
    "onderwerp|inviato|a|oggetto|sendt|til|emne|skickat|till|ämne|wysłano|do|temat|dw|"
    "odesláno|komu|předmět|lähetetty|vastaanottaja|aihe|elküldve|címzett|tárgy|gönderildi|"
    "kime|konu|tarih|отправлено|кому|тема|дата|送信日時|宛先|件名|发送时间|收件人|主题|"
    "寄件日期|收件者|主旨"
)
_HEADER_FIELD = re.compile(rf"^\s*\*?\s*({_HEADER_LABELS})\s*[:：]\s*\*?", re.IGNORECASE)
_FROM_FIELD = re.compile(rf"^\s*\*?\s*({_FROM_LABELS})\s*[:：]", re.IGNORECASE)
_MOBILE_SIGNATURE = [
    re.compile(p, re.IGNORECASE)
    for p in (
        (
            r"^\W*(sent|envoy[ée]|enviado|inviato|verzonden|gesendet|skickat|sendt)\s+"
            r"(from|with|via|by|using|depuis|de|von|mit|met|desde|da|från|fra|on)\b.{0,120}$"
        ),
        r"^\W*(von|vom)\s+mein\w*\s+.{0,60}(gesendet|verschickt)\W*$",
        r"^\W*diese nachricht wurde von mein\w*\s.{0,80}gesendet\W*$",
        r"^\W*(get|download)\s+\[?outlook for\b.{0,80}$",
        (
            r"^\W*(someone|sent|from|written)\s+(from\s+|on\s+)?(my\s+|a\s+)?"
            r"(mobile|iphone|ipad|android|phone|cell|blackberry|galaxy|smartphone)\b.{0,40}$"
        ),
        r"^\W*(從|从)我的\s*\S+\s*(傳送|发送)\W*$",
        r"^\W*\S+\s*から送信\W*$",
    )
]


def _is_blank(line: str) -> bool:
    return not line.strip() or line.strip() == "\ufeff"


def _is_quote(line: str) -> bool:
    return line.lstrip().startswith(">")


# Each line is looked at from several windows (header blocks span up to 8 lines): the
# per-line regex verdicts are cached.
@lru_cache(maxsize=4096)
def _is_header_field(line: str) -> bool:
    return bool(_HEADER_FIELD.match(line))


@lru_cache(maxsize=4096)
def _is_mobile_signature(line: str) -> bool:
    text = line.strip()
    return bool(text) and len(text) <= 160 and any(p.match(text) for p in _MOBILE_SIGNATURE)


def _next_nonblank(lines: list[str], start: int) -> int:
    i = start
    while i < len(lines) and _is_blank(lines[i]):
        i += 1
    return i


def _header_block_at(lines: list[str], i: int) -> bool:
    """An embedded From:/Sent:/To:/Subject: block starting at line `i`."""
    if i >= len(lines) or not (_FROM_FIELD.match(lines[i]) or _is_header_field(lines[i])):
        return False
    fields = 0
    for line in lines[i : i + 8]:
        if _is_header_field(line):
            fields += 1
        elif _is_blank(line):
            break
    return fields >= 3 or (fields >= 2 and bool(_FROM_FIELD.match(lines[i])))


def _embedded_header_at(lines: list[str], i: int) -> bool:
    """A From:/Sent:/To: block starts here, or a rule line right before one."""
    if _RULE.match(lines[i]):
        return _header_block_at(lines, _next_nonblank(lines, i + 1))
    return _header_block_at(lines, i) and (
        i == 0 or _is_blank(lines[i - 1]) or bool(_RULE.match(lines[i - 1]))
    )


def _wrote_header_start(lines: list[str], end: int) -> int | None:
    """If line `end` closes an "On <date>, <name> wrote:" header (up to 3 lines), its first line."""
    line = lines[end].rstrip()
    if not line.endswith((":", "：")):
        return None
    start = end
    while True:
        joined = " ".join(s.strip() for s in lines[start : end + 1])
        if _WROTE.search(joined) and len(joined) < 400:
            if _HEADER_START.match(lines[start]) or start == end - 2 or start == 0:
                return start
            previous = lines[start - 1].rstrip()
            if _is_blank(previous) or previous.endswith((".", "!", "?", "。", "！", "？")):
                return start
        if start == 0 or end - start >= 2 or _is_blank(lines[start - 1]):
            break
        start -= 1
    # A colon-terminated line with an address or date right before a quote block (Japanese Gmail).
    nxt = _next_nonblank(lines, end + 1)
    if nxt < len(lines) and _is_quote(lines[nxt]) and re.search(r"@|\d", line) and len(line) < 200:
        return end
    return None


def _only_tail_after(lines: list[str], start: int) -> bool:
    """Nothing but quotes, blank lines and signatures from `start` on."""
    for i in range(start, len(lines)):
        line = lines[i]
        if _SIG_DELIMITER.match(line.rstrip("\r")):
            return True
        if not (_is_blank(line) or _is_quote(line) or _is_mobile_signature(line)):
            return False
    return True


def _cut_candidates(lines: list[str]) -> list[tuple[int, str]]:
    candidates: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        stripped = line.rstrip("\r")
        if _SIG_DELIMITER.match(stripped):
            candidates.append((i, SIGNATURE))
        elif _DELIMITER.match(stripped):
            candidates.append((i, FORWARD if _FORWARD_WORDS.search(stripped) else QUOTE))
        elif _BEGIN_FORWARD.match(stripped):
            candidates.append((i, FORWARD))
        elif _embedded_header_at(lines, i):
            candidates.append((i, QUOTE))
        else:
            start = _wrote_header_start(lines, i)
            if start is not None:
                nxt = _next_nonblank(lines, i + 1)
                if nxt >= len(lines):
                    continue
                if not _is_quote(lines[nxt]):
                    # Top-posted reply above an unquoted original (Outlook, mobile clients).
                    candidates.append((start, QUOTE))
                    continue
                end = nxt
                while end < len(lines) and (_is_quote(lines[end]) or _is_blank(lines[end])):
                    end += 1
                if _only_tail_after(lines, end):
                    candidates.append((start, QUOTE))
    # A trailing block of quoted lines without a header (e.g. "> On … wrote:" inside it).
    last_text = max(
        (
            i
            for i, line in enumerate(lines)
            if not _is_blank(line) and not _is_quote(line) and not _is_mobile_signature(line)
        ),
        default=-1,
    )
    first_quote = _next_nonblank(lines, last_text + 1)
    if first_quote < len(lines) and _is_quote(lines[first_quote]):
        candidates.append((first_quote, QUOTE))
    # Trailing "Sent from my iPhone" lines.
    i = len(lines) - 1
    first_signature = None
    while i >= 0 and (_is_blank(lines[i]) or _is_mobile_signature(lines[i])):
        if _is_mobile_signature(lines[i]):
            first_signature = i
        i -= 1
    if first_signature is not None:
        candidates.append((first_signature, SIGNATURE))
    return sorted(candidates)


def _leading_quote_end(lines: list[str]) -> int | None:
    """A bottom-posted reply: an optional "On … wrote:" header and a quote block open the text,
    the answer follows, and nothing after it is quoted (else the reply is interleaved, left
    whole). Returns the first line after the quote block."""
    start = _next_nonblank(lines, 0)
    quote_start = start
    for end in range(start, min(start + 3, len(lines))):
        if _wrote_header_start(lines, end) == start:
            quote_start = _next_nonblank(lines, end + 1)
            break
    if quote_start >= len(lines) or not _is_quote(lines[quote_start]):
        return None
    end = quote_start
    while end < len(lines) and (_is_quote(lines[end]) or _is_blank(lines[end])):
        end += 1
    rest = lines[end:]
    if not any(not _is_blank(line) for line in rest) or any(_is_quote(line) for line in rest):
        return None
    return end


def split_text(text: str) -> Split:
    """Split plain text into what was written and the trailing quote/forward/signature.

    Texts longer than `MAX_SPLIT_CHARS` are left whole: they are cut for size anyway, and the
    line scans here should stay cheap on hostile input.
    """
    if len(text) > MAX_SPLIT_CHARS:
        return Split(kept=text.strip("\n").rstrip())
    lines = text.split("\n")
    leading_end = _leading_quote_end(lines)
    if leading_end is not None:
        return Split(
            kept="\n".join(lines[leading_end:]).strip("\n").rstrip(),
            stripped="\n".join(lines[:leading_end]).strip("\n").rstrip(),
            leading=True,
        )
    # The cut must leave something the sender wrote above it.
    first_written = next(
        (
            i
            for i, line in enumerate(lines)
            if not _is_blank(line) and not _SIG_DELIMITER.match(line)
        ),
        len(lines),
    )
    for index, kind in _cut_candidates(lines):
        if index > first_written:
            kept = "\n".join(lines[:index]).strip("\n").rstrip()
            stripped = "\n".join(lines[index:]).strip("\n").rstrip()
            return Split(kept=kept, stripped=stripped, kind=kind)
    return Split(kept=text.strip("\n").rstrip())


# --- HTML ---------------------------------------------------------------------------------

_QUOTE_CLASSES = {"gmail_quote", "gmail_quote_container", "yahoo_quoted", "protonmail_quote",
                  "moz-forward-container", "zmail_extra", "tutanota_quote"}  # fmt: skip
_SIGNATURE_CLASSES = {"gmail_signature", "moz-signature", "yahoo-signature"}
_MARKER_IDS = {"divrplyfwdmsg", "appendonsend", "stopspelling", "olk_src_body_section",
               "mail-editor-reference-message-container"}  # fmt: skip
_OUTLOOK_BORDER = re.compile(r"border-top:\s*solid\s+#(e1e1e1|b5c4df)", re.IGNORECASE)
_HTML_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed",
                        "param", "source", "track", "wbr"})  # fmt: skip
_HTML_BLOCK = frozenset({"p", "div", "table", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol",
                         "blockquote", "center", "section", "span", "font"})  # fmt: skip
_INVISIBLE = frozenset({"script", "style", "head", "title", "noscript", "template"})


@dataclass(slots=True)
class _Candidate:
    start: int
    kind: str
    marker: bool  # everything after it is quoted, whatever follows
    depth: int
    closed_at: int | None = None


class _QuoteFinder(Handler):
    def __init__(self) -> None:
        self.stack: list[tuple[str, int]] = []
        self.candidates: list[_Candidate] = []
        self.open_candidates: list[_Candidate] = []
        self.content_offsets: list[int] = []
        self.invisible = 0
        # (start offset, text) of the last closed block element, to pull in "On … wrote:" lines.
        self.last_block: tuple[int, str] | None = None
        self.block_text: list[list[str]] = []
        self.text_since_block = ""

    def _offset(self) -> int:
        return self.offset

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        offset = self._offset()
        values = {k: (v or "") for k, v in attrs}
        classes = set(values.get("class", "").lower().split())
        element_id = values.get("id", "").lower()
        if tag in _INVISIBLE:
            self.invisible += 1
        if tag == "img" and not self.invisible:
            self.content_offsets.append(offset)
        kind: str | None = None
        marker = False
        if tag == "blockquote" and (values.get("type", "").lower() == "cite" or "cite" in values):
            kind = QUOTE
        elif classes & _QUOTE_CLASSES or values.get("name", "").lower() == "quote":
            kind = FORWARD if "moz-forward-container" in classes else QUOTE
        elif classes & _SIGNATURE_CLASSES or element_id == "signature":
            kind = SIGNATURE
        elif (
            element_id in _MARKER_IDS
            or classes & {"moz-cite-prefix", "outlookmessageheader"}
            or (tag == "div" and _OUTLOOK_BORDER.search(values.get("style", "")))
        ):
            # Reply headers: what follows them, not what is inside, is the quoted mail.
            kind, marker = QUOTE, True
        depth = len(self.stack)
        if kind is not None and not self.open_candidates:
            start = offset
            if kind == QUOTE and self.last_block and not self.text_since_block.strip():
                block_start, block_text = self.last_block
                if _WROTE.search(block_text) and block_text.rstrip().endswith((":", "：")):
                    start = block_start
            candidate = _Candidate(start=start, kind=kind, marker=marker, depth=depth)
            self.candidates.append(candidate)
            if not marker:
                self.open_candidates.append(candidate)
        if tag in _HTML_VOID:
            if tag == "br":
                self._text("\n")
            return
        self.stack.append((tag, offset))
        self.block_text.append([])
        if tag in _HTML_BLOCK:
            self.text_since_block = ""

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _HTML_VOID and self.stack and self.stack[-1][0] == tag:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _INVISIBLE:
            self.invisible = max(0, self.invisible - 1)
        if not any(t == tag for t, _ in self.stack):
            return
        while self.stack:
            open_tag, start = self.stack.pop()
            text = "".join(self.block_text.pop())
            if self.block_text:
                self.block_text[-1].append(text)
            for candidate in list(self.open_candidates):
                if candidate.depth == len(self.stack):
                    candidate.closed_at = self._offset()
                    self.open_candidates.remove(candidate)
            if open_tag in _HTML_BLOCK:
                self.last_block = (start, text)
                self.text_since_block = ""
            if open_tag == tag:
                break

    def _text(self, data: str) -> None:
        if self.block_text:
            self.block_text[-1].append(data)
        self.text_since_block += data

    def handle_data(self, data: str) -> None:
        if self.invisible:
            return
        self._text(data)
        if data.strip() and data.strip() != "\u00a0":
            self.content_offsets.append(self._offset())


# Elements that start a new visual line (and end it), for reading HTML the way text is read.
_LINE_BREAKING = _HTML_BLOCK - {"span", "font"} | {
    "li", "tr", "td", "th", "dd", "dt", "address", "article", "aside", "footer",
    "header", "main", "nav", "figure", "caption", "tbody", "thead",
}


class _VisualLines(Handler):
    """HTML as the lines a reader sees, each with the source offset where it starts.

    A quote written as text inside HTML ("-----Original Message-----", a From:/Sent:/To: block
    under a rule, "&gt;"-prefixed lines) is found by the plain-text rules on these lines.
    """

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.texts: list[str] = []
        self._pieces: list[str] = []
        self._start: int | None = None
        self._invisible = 0

    def _offset(self) -> int:
        return self.offset

    def _break(self) -> None:
        if self._start is not None:
            self.starts.append(self._start)
            self.texts.append("".join(self._pieces))
        self._pieces, self._start = [], None

    def _begin(self) -> None:
        if self._start is None:
            self._start = self._offset()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _INVISIBLE:
            self._invisible += 1
        if self._invisible:
            return
        if tag == "br":
            # Ends the open line; a br on its own is an empty line.
            self._begin()
            self._break()
        elif tag == "hr":
            self._break()
            self._begin()
            self._pieces.append("-" * 10)
            self._break()
        elif tag in _LINE_BREAKING:
            self._break()
            self._begin()
        else:
            self._begin()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _INVISIBLE:
            self._invisible = max(0, self._invisible - 1)

    def handle_endtag(self, tag: str) -> None:
        if tag in _INVISIBLE:
            self._invisible = max(0, self._invisible - 1)
        if tag in _LINE_BREAKING:
            self._break()

    def handle_data(self, data: str) -> None:
        if self._invisible:
            return
        # Source newlines are only whitespace in HTML; a line ends at a break or a block.
        text = " ".join(data.split("\n"))
        if text.strip():
            self._begin()
        if self._start is not None:
            self._pieces.append(text)

    def finish(self) -> None:
        self._break()


def _text_rule_cut(doc: HtmlDoc) -> tuple[int, str] | None:
    """Where the plain-text rules cut the visible lines of `doc` (source offset, kind)."""
    reader = _VisualLines()
    replay(doc, reader)
    reader.finish()
    lines = reader.texts
    first_written = next((i for i, line in enumerate(lines) if not _is_blank(line)), len(lines))
    for index, kind in _cut_candidates(lines):
        if index > first_written:
            return reader.starts[index], kind
    return None


def _end_of_tag(html: str, offset: int) -> int:
    end = html.find(">", offset)
    return len(html) if end < 0 else end + 1


def _leading_html_quote(finder: _QuoteFinder, html: str) -> int | None:
    """A bottom-posted HTML reply: the first content is a cited quote (with its "wrote:" header)
    and the answer follows it, unquoted. Returns the offset where the answer starts."""
    quotes = [c for c in finder.candidates if c.kind == QUOTE]
    cited = next((c for c in quotes if not c.marker), None)
    if cited is None or cited.closed_at is None or finder.content_offsets[0] < quotes[0].start:
        return None
    answer = _end_of_tag(html, cited.closed_at)
    later_quotes = [c for c in finder.candidates if c.start >= answer]
    if later_quotes or finder.content_offsets[-1] < answer:
        return None
    return answer


def split_html(source: str | HtmlDoc) -> Split:
    """The sender's part and the quoted part of `html` (stripped is "" when nothing was found).

    Both halves are raw (unsanitised) HTML fragments; the sanitiser closes what the cut left open.
    Quoting is recognised from the markup mail clients put around it and, for clients that quote
    in plain text inside their HTML, from the visible lines by the plain-text rules; the earlier
    of the two cuts wins.
    """
    doc = HtmlDoc.of(source)
    html = doc.text
    finder = _QuoteFinder()
    replay(doc, finder)
    if not finder.content_offsets:
        return Split(kept=html, kept_doc=doc)
    leading = _leading_html_quote(finder, html)
    if leading is not None:
        return _split(doc, leading, QUOTE, leading=True)
    first_content, last_content = finder.content_offsets[0], finder.content_offsets[-1]
    cuts: list[tuple[int, str]] = []
    for candidate in finder.candidates:
        # A quote with the sender's text after it is interleaved: leave it where it is.
        closed = candidate.closed_at
        if not candidate.marker and closed is not None and last_content >= closed:
            continue
        if first_content < candidate.start:
            cuts.append((candidate.start, candidate.kind))
            break
    text_cut = _text_rule_cut(doc)
    if text_cut is not None and text_cut[0] > first_content:
        cuts.append(text_cut)
    if not cuts:
        return Split(kept=html, kept_doc=doc)
    offset, kind = min(cuts)
    return _split(doc, offset, kind, leading=False)


def _split(doc: HtmlDoc, offset: int, kind: str, *, leading: bool) -> Split:
    head, tail = doc.prefix(offset), doc.suffix(offset)
    if leading:  # the quote on top, the answer below it
        return Split(kept=tail.text, stripped=head.text, kind=kind, leading=True,
                     kept_doc=tail, stripped_doc=head)
    return Split(kept=head.text, stripped=tail.text, kind=kind, kept_doc=head, stripped_doc=tail)
