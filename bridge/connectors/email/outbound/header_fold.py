"""Header classes that fold values exactly, for the composing policy.

The stdlib folder can add or drop spaces when it mixes encoded words and long plain words in one
unstructured header, and it RFC 2047-encodes message ids that do not fit on a line. These classes
take values that were already checked (see header_text / message_ids) and write them so that a
reader decodes exactly the same text.
"""

from __future__ import annotations

import base64
from email import policy as email_policy
from email.headerregistry import Address
from typing import Any

_LINE = 78
_MAX_PLAIN_WORD = 900
_EW_OVERHEAD = len("=?utf-8?b??=")
_MIN_CHUNK_BYTES = 6


def _needs_encoding(text: str) -> bool:
    if not text.isascii() or "=?" in text:
        return True
    if any(not (0x20 <= ord(c) <= 0x7E) for c in text):
        return True
    return any(len(word) > _MAX_PLAIN_WORD for word in text.split(" "))


def _chunks(text: str, first_bytes: int, bytes_per_word: int) -> list[str]:
    """Split `text` at character boundaries into pieces of at most the given UTF-8 sizes."""
    pieces: list[str] = []
    current = ""
    size = 0
    limit = first_bytes
    for char in text:
        width = len(char.encode("utf-8"))
        if current and size + width > limit:
            pieces.append(current)
            current, size, limit = "", 0, bytes_per_word
        current += char
        size += width
    if current:
        pieces.append(current)
    return pieces


def _word(piece: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(piece.encode('utf-8')).decode('ascii')}?="


def fold_text(name: str, text: str, policy: email_policy.Policy) -> str:
    """`Name: text` folded at spaces, or as base64 encoded words when plain text will not do."""
    linesep = policy.linesep
    if not text:
        return f"{name}: {linesep}"
    lines: list[str] = []
    line = f"{name}:"
    if not _needs_encoding(text):
        for word in text.split(" "):
            if len(line) + 1 + len(word) > _LINE and line != f"{name}:":
                lines.append(line)
                line = ""
            line += " " + word
        lines.append(line)
        return linesep.join(lines) + linesep
    # base64 length is 4 per 3 bytes; a line is " " + encoded word
    per_word = (_LINE - 1 - _EW_OVERHEAD) // 4 * 3
    first = max(_MIN_CHUNK_BYTES, (_LINE - len(line) - 1 - _EW_OVERHEAD) // 4 * 3)
    for piece in _chunks(text, first, per_word):
        lines.append(f"{line} {_word(piece)}" if line else f" {_word(piece)}")
        line = ""
    return linesep.join(lines) + linesep


def fold_ids(name: str, ids: str, policy: email_policy.Policy) -> str:
    """Message ids separated by spaces, folded only between ids, never encoded."""
    lines: list[str] = []
    line = f"{name}:"
    for msg_id in ids.split():
        if len(line) + 1 + len(msg_id) > _LINE and line != f"{name}:":
            lines.append(line)
            line = ""
        line += f" {msg_id}"
    lines.append(line)
    return policy.linesep.join(lines) + policy.linesep


class CheckedTextHeader:
    """Free text (Subject, extra headers) that was already decoded and checked."""

    max_count = 1
    name: str  # set by email.headerregistry.BaseHeader, which the registry mixes in

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        kwds["decoded"] = value
        kwds["parse_tree"] = None

    def fold(self, *, policy: email_policy.Policy) -> str:
        return fold_text(self.name, str(self), policy)


class MessageIdListHeader:
    """Message-ID / In-Reply-To / References made of already validated `<...>` ids."""

    max_count = 1
    name: str  # set by email.headerregistry.BaseHeader, which the registry mixes in

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        kwds["decoded"] = " ".join(value.split())
        kwds["parse_tree"] = None

    def fold(self, *, policy: email_policy.Policy) -> str:
        return fold_ids(self.name, str(self), policy)


_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)


def _phrase_tokens(name: str) -> list[str]:
    """A display name as phrase tokens: atoms, one quoted-string, or one encoded word.

    A long name is deliberately kept in ONE encoded word even past RFC 2047's 75 characters:
    readers disagree about the space between adjacent encoded words in a phrase (Python keeps it,
    RFC 2047 readers drop it), so splitting would change the name for one of them. Callers cap
    the name length (see header_text.clean_display_name), which keeps the line far below 998.
    """
    plain = name.isascii() and "=?" not in name and all(0x20 <= ord(c) <= 0x7E for c in name)
    if plain and all(c in _ATEXT or c == " " for c in name):
        return name.split(" ")
    if plain:
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return [_word(name)]


def fold_addresses(
    name: str, mailboxes: tuple[tuple[str, str], ...], policy: email_policy.Policy
) -> str:
    """`Name: a <x@y>, b <z@w>` folded between tokens only."""
    tokens: list[str] = []
    for index, (display, addr) in enumerate(mailboxes):
        parts = [*_phrase_tokens(display), f"<{addr}>"] if display else [addr]
        if index < len(mailboxes) - 1:
            parts[-1] += ","
        tokens += parts
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) > _LINE and line != f"{name}:":
            lines.append(line)
            line = ""
        line += f" {token}"
    lines.append(line)
    return policy.linesep.join(lines) + policy.linesep


class CheckedAddressHeader:
    """From / To / Cc from checked `(display name, addr-spec)` pairs (set as a tuple of Address)."""

    max_count = 1
    name: str  # set by email.headerregistry.BaseHeader, which the registry mixes in
    _checked: tuple[Address, ...]

    @classmethod
    def parse(cls, value: object, kwds: dict[str, Any]) -> None:
        items: Any = (value,) if isinstance(value, Address) else value
        if isinstance(items, str) or not all(isinstance(a, Address) for a in items):
            raise TypeError("address headers of composed mail take Address objects only")
        kwds["checked"] = tuple(items)
        kwds["decoded"] = ", ".join(str(a) for a in kwds["checked"])
        kwds["parse_tree"] = None

    def init(self, *args: object, **kw: Any) -> None:
        self._checked = kw.pop("checked")
        super().init(*args, **kw)  # type: ignore[misc]

    @property
    def addresses(self) -> tuple[Address, ...]:
        return self._checked

    def fold(self, *, policy: email_policy.Policy) -> str:
        return fold_addresses(
            self.name, tuple((a.display_name, a.addr_spec) for a in self._checked), policy
        )
