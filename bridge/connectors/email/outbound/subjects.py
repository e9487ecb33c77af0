"""Subject lines for replies and for new threads started from Matrix."""

from __future__ import annotations

import re

# Reply prefixes used by common mail clients in various languages (matched case-insensitively),
# optionally with a counter as in `Re[2]:` or `Re(2):`, and an ASCII or full-width colon.
_REPLY_WORDS = (
    "re",
    "aw",
    "sv",
    "vs",
    "antw",
    "antwort",
    "odp",
    "ref",
    "rif",
    "res",
    "atb",
    "vá",
    "απ",
    "ответ",
    "回复",
    "答复",
    "回覆",
)
_REPLY_PREFIX = re.compile(
    r"^\s*(?:"
    + "|".join(re.escape(w) for w in _REPLY_WORDS)
    + r")\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*",
    re.IGNORECASE,
)
SUBJECT_LIMIT = 78


def strip_reply_prefixes(subject: str) -> str:
    """`Re: AW: Re[3]: Hello` -> `Hello`."""
    previous = None
    while previous != subject:
        previous = subject
        subject = _REPLY_PREFIX.sub("", subject, count=1)
    return subject.strip()


def reply_subject(subject: str) -> str:
    """The subject for a reply: exactly one `Re: ` in front of the original topic."""
    topic = " ".join(strip_reply_prefixes(subject).split())
    return f"Re: {topic}" if topic else "Re:"


def subject_from_first_line(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """The first non-empty line of `text`, cut at a word boundary to at most `limit` characters."""
    for line in text.splitlines():
        # a Markdown heading marker or quote marker is not part of the topic
        line = " ".join(re.sub(r"^\s*(?:#{1,6}\s+|>\s*)+", "", line).split())
        if line:
            break
    else:
        return ""
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"
