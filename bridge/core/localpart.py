"""Reversible escaping of remote identifiers into Matrix localparts."""

from __future__ import annotations

import re

_SAFE = set("abcdefghijklmnopqrstuvwxyz0123456789.-/")


def escape(identifier: str) -> str:
    """Lower-case letters, digits and .-/ stay; upper case becomes _x; the rest =xx (UTF-8)."""
    out: list[str] = []
    for ch in identifier:
        if ch in _SAFE:
            out.append(ch)
        elif "A" <= ch <= "Z":
            out.append("_" + ch.lower())
        else:
            out.extend(f"={b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def unescape(localpart: str) -> str:
    def _one(m: re.Match[str]) -> str:
        token = m.group(0)
        if token.startswith("_"):
            return token[1].upper()
        return bytes.fromhex(token.replace("=", "")).decode("utf-8", "replace")

    return re.sub(r"(?:=[0-9a-f]{2})+|_[a-z]", _one, localpart)
