"""Parsers for the raw response lines aioimaplib hands back, plus small wire-format helpers.

aioimaplib strips the leading `* ` (and for most commands the command name) from untagged
lines, stores literals as separate `bytearray` items, and appends the tagged completion text
as the last line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
import re

from . import mutf7
from .errors import ImapProtocolError

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.I)
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]", re.I)
_HIGHESTMODSEQ = re.compile(rb"\[HIGHESTMODSEQ (\d+)\]", re.I)
_EXISTS = re.compile(rb"^(\d+) EXISTS\b", re.I)
_FETCH_START = re.compile(rb"^(\d+) FETCH \(", re.I)
_LITERAL_SECTION = re.compile(
    rb"(BODY\[[^\]]*\]|BINARY\[[^\]]*\]|RFC822(?:\.HEADER|\.TEXT)?)(?:<\d+>)? \{(\d+)\}$", re.I
)
_QUOTED_SECTION = re.compile(
    rb"(BODY\[[^\]]*\]|RFC822(?:\.HEADER|\.TEXT)?)(?:<\d+>)? (NIL|\"(?:[^\"\\]|\\.)*\")", re.I
)
_UID = re.compile(rb"\bUID (\d+)", re.I)
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)", re.I)
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"', re.I)
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)", re.I)
_LIST = re.compile(rb'^\(([^)]*)\) (NIL|"(?:[^"\\]|\\.)*") ?(.*)$', re.I)
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.I)
_INTERNALDATE_VALUE = re.compile(
    r"^\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$"
)


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """What SELECT told us about a folder."""

    uidvalidity: int
    uidnext: int | None
    exists: int
    # with CONDSTORE enabled: grows with every change of the folder (new mail, flags)
    highestmodseq: int | None = None


@dataclass(slots=True)
class FetchRecord:
    """One message of a FETCH response. `sections` is keyed by upper-cased section name,
    e.g. `BODY[]` or `BODY[HEADER.FIELDS (MESSAGE-ID)]`."""

    seq: int
    uid: int | None = None
    flags: frozenset[str] | None = None
    internal_date: datetime | None = None
    size: int | None = None
    sections: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One LIST line: decoded name, wire name, attributes (e.g. `\\Sent`) and delimiter."""

    name: str
    wire_name: str
    flags: frozenset[str]
    delimiter: str | None


def completion_text(lines: Sequence[bytes | bytearray]) -> str:
    """The human-readable text of the tagged completion (the last line)."""
    if not lines:
        return ""
    return bytes(lines[-1]).decode("utf-8", "replace").strip()


def parse_select(lines: Sequence[bytes | bytearray]) -> MailboxStatus:
    uidvalidity = uidnext = highestmodseq = None
    exists = 0
    for line in lines:
        if isinstance(line, bytearray):
            continue
        if m := _UIDVALIDITY.search(line):
            uidvalidity = int(m.group(1))
        if m := _UIDNEXT.search(line):
            uidnext = int(m.group(1))
        if m := _HIGHESTMODSEQ.search(line):
            highestmodseq = int(m.group(1))
        if m := _EXISTS.match(line):
            exists = int(m.group(1))
    if uidvalidity is None:
        raise ImapProtocolError("the server did not report UIDVALIDITY for the folder")
    return MailboxStatus(uidvalidity=uidvalidity, uidnext=uidnext, exists=exists,
                         highestmodseq=highestmodseq)


def parse_search(lines: Sequence[bytes | bytearray]) -> list[int]:
    """UIDs or sequence numbers from SEARCH lines (the completion line is skipped)."""
    found: list[int] = []
    for line in lines[:-1]:
        if isinstance(line, bytearray):
            continue
        text = line
        if text[:7].upper() == b"SEARCH ":
            text = text[7:]
        for token in text.split():
            if token.isdigit():
                found.append(int(token))
    return found


def parse_internal_date(value: str) -> datetime | None:
    m = _INTERNALDATE_VALUE.match(value)
    if not m:
        return None
    day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
    try:
        month = _MONTHS.index(mon.capitalize()) + 1
    except ValueError:
        return None
    offset = timedelta(hours=int(oh), minutes=int(om))
    tz = timezone(offset if sign == "+" else -offset)
    try:
        return datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=tz)
    except ValueError:
        return None


def _section_key(raw: bytes) -> str:
    return " ".join(raw.decode("ascii", "replace").upper().split())


def _unquote(raw: bytes) -> bytes:
    return re.sub(rb"\\(.)", rb"\1", raw[1:-1])


def parse_fetch(lines: Sequence[bytes | bytearray]) -> list[FetchRecord]:
    """Split a FETCH response into per-message records (completion line ignored)."""
    groups: list[tuple[int, list[bytes | bytearray]]] = []
    for item in lines[:-1]:
        if not isinstance(item, bytearray) and (m := _FETCH_START.match(item)):
            groups.append((int(m.group(1)), [item]))
        elif groups:
            groups[-1][1].append(item)
    return [_parse_fetch_message(seq, parts) for seq, parts in groups]


def _parse_fetch_message(seq: int, parts: list[bytes | bytearray]) -> FetchRecord:
    rec = FetchRecord(seq=seq)
    texts: list[bytes] = []
    pending: str | None = None
    for part in parts:
        if isinstance(part, bytearray):
            if pending is not None:
                rec.sections[pending] = bytes(part)
                pending = None
            continue
        m = _LITERAL_SECTION.search(part)
        pending = _section_key(m.group(1)) if m else None
        texts.append(part)
    text = b" ".join(texts)
    for m in _QUOTED_SECTION.finditer(text):
        key = _section_key(m.group(1))
        if key not in rec.sections:
            value = m.group(2)
            rec.sections[key] = b"" if value.upper() == b"NIL" else _unquote(value)
    if m := _UID.search(text):
        rec.uid = int(m.group(1))
    if m := _FLAGS.search(text):
        rec.flags = frozenset(f.decode("utf-8", "replace") for f in m.group(1).split())
    if m := _INTERNALDATE.search(text):
        rec.internal_date = parse_internal_date(m.group(1).decode("ascii", "replace"))
    if m := _SIZE.search(text):
        rec.size = int(m.group(1))
    return rec


def parse_list(lines: Sequence[bytes | bytearray]) -> list[ListEntry]:
    entries: list[ListEntry] = []
    items = list(lines[:-1])
    i = 0
    while i < len(items):
        line = items[i]
        i += 1
        if isinstance(line, bytearray):
            continue
        if line[:5].upper() == b"LIST ":
            line = line[5:]
        m = _LIST.match(line)
        if not m:
            continue
        flags = frozenset(f.decode("ascii", "replace") for f in m.group(1).split())
        delim_raw = m.group(2)
        delimiter = None if delim_raw.upper() == b"NIL" else _unquote(delim_raw).decode()
        raw_name = m.group(3)
        if re.fullmatch(rb"\{\d+\}", raw_name) and i < len(items):
            raw_name = bytes(items[i])
            i += 1
        elif raw_name.startswith(b'"') and raw_name.endswith(b'"') and len(raw_name) >= 2:
            raw_name = _unquote(raw_name)
        wire = raw_name.decode("utf-8", "replace")
        entries.append(ListEntry(mutf7.decode(wire), wire, flags, delimiter))
    return entries


def parse_appenduid(lines: Sequence[bytes | bytearray]) -> tuple[int, int] | None:
    """(uidvalidity, uid) from an APPENDUID response code (UIDPLUS), if present."""
    for line in lines:
        if isinstance(line, bytearray):
            continue
        if m := _APPENDUID.search(line):
            return int(m.group(1)), int(m.group(2))
    return None


def uid_set(uids: Iterable[int]) -> str:
    """Compact sequence set: [1, 2, 3, 7, 9, 10] -> "1:3,7,9:10"."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("empty UID set")
    ranges: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        ranges.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    ranges.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(ranges)


def imap_date(day: date) -> str:
    """Date for SEARCH SINCE/BEFORE, e.g. 07-Mar-2025."""
    return f"{day.day:02d}-{_MONTHS[day.month - 1]}-{day.year:04d}"


def quote(value: str) -> str:
    """An IMAP quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_folder(name: str) -> str:
    return quote(mutf7.encode(name))
