"""RFC 3676 format=flowed: joining soft line breaks back into paragraphs.

Hand-written: the one package for it on PyPI (formatflowed) was last released in 2016, and only
the decoding half is needed here.
"""

from __future__ import annotations

import re

_QUOTE_PREFIX = re.compile(r"^>+")


def unflow(text: str, *, delsp: bool = False) -> str:
    """Plain text of a `format=flowed` body: soft breaks joined, space-stuffing removed.

    Quote depth (leading `>`) is kept; lines only join with following lines of the same depth.
    The signature separator `-- ` is never treated as a soft break.
    """
    out: list[str] = []
    pending: str | None = None
    pending_depth = 0
    for line in text.split("\n"):
        match = _QUOTE_PREFIX.match(line)
        depth = len(match.group(0)) if match else 0
        content = line[depth:]
        content = content.removeprefix(" ")  # space-stuffing
        if pending is not None and depth != pending_depth:
            out.append(">" * pending_depth + (" " if pending_depth else "") + pending)
            pending = None
        soft = content.endswith(" ") and content != "-- "
        if soft and delsp:
            content = content[:-1]
        pending = content if pending is None else pending + content
        pending_depth = depth
        if not soft:
            out.append(">" * depth + (" " if depth and pending else "") + pending)
            pending = None
    if pending is not None:
        out.append(">" * pending_depth + (" " if pending_depth else "") + pending)
    return "\n".join(out)
