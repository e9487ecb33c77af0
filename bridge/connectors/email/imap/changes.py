"""What the server announced on a session without being asked: new mail, expunges and flag
changes in the selected folder (EXISTS, EXPUNGE, FETCH) and, with NOTIFY (RFC 5465), changes of
other folders (STATUS)."""

from __future__ import annotations

import asyncio
import re

from . import mutf7

_EXISTS = re.compile(rb"^\* \d+ EXISTS\b", re.I)
_COUNT_CHANGE = re.compile(rb"^\* (?:\d+ (?:EXISTS|EXPUNGE)|VANISHED)\b", re.I)
_FLAG_CHANGE = re.compile(rb"^\* \d+ FETCH \(.*\bFLAGS\b", re.I)
_BYE = re.compile(rb"^\* BYE\b", re.I)
_STATUS = re.compile(rb'^\* STATUS (?:"((?:[^"\\]|\\.)*)"|(\S+)) \(', re.I)


def status_folder(line: bytes) -> str | None:
    """The folder a `* STATUS` line is about (decoded name), None for other lines. A name sent
    as a literal cannot be read from the line alone: "" then stands for "some folder"."""
    m = _STATUS.match(line)
    if m is None:
        return None
    if m.group(1) is not None:
        wire = re.sub(rb"\\(.)", rb"\1", m.group(1))
    else:
        wire = m.group(2)
        if wire.startswith(b"{"):
            return ""
    return mutf7.decode(wire.decode("utf-8", "replace"))


class Changes:
    """Announcements not yet acted on. `exists_seen` counts every EXISTS, also those answering
    a SELECT (compare it before and after a catch-up); `selected` and `folders` only collect
    real changes; `event` is set whenever one comes in. `bye`: the server's text when it said
    it is closing the session (BYE; set too)."""

    __slots__ = ("bye", "event", "exists_seen", "folders", "selected")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.exists_seen = 0
        self.selected = False
        self.folders: set[str] = set()
        self.bye: str | None = None

    def note(self, line: bytes, answering: frozenset[str]) -> None:
        """One untagged line. `answering`: the commands of ours it may answer (SELECT's EXISTS
        describes the folder, a FETCH's FLAGS or a STATUS may be the answer asked for): such a
        line is no announcement. A flag change during our own FETCH is therefore only found by
        the next look at the folder's HIGHESTMODSEQ."""
        if _EXISTS.match(line):
            self.exists_seen += 1
        if _BYE.match(line) and "LOGOUT" not in answering:
            self.bye = line[2:].decode("utf-8", "replace")
            self.event.set()
        if "SELECT" in answering:
            return
        if _COUNT_CHANGE.match(line) or ("FETCH" not in answering and _FLAG_CHANGE.match(line)):
            self.selected = True
            self.event.set()
        elif "STATUS" not in answering and (folder := status_folder(line)) is not None:
            self.folders.add(folder)
            self.event.set()

    def take(self) -> tuple[bool, set[str]]:
        """(the selected folder changed, other folders that changed), and forget them."""
        selected, folders = self.selected, self.folders
        self.selected, self.folders = False, set()
        self.event.clear()
        return selected, folders
