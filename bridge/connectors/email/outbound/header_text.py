"""Make free-text header values (subjects, display names, filenames) safe to put into a mail.

Python's email package decodes RFC 2047 encoded words when a header value is *set*, and the
receiver decodes them again when it *reads* the mail. So a value such as
`=?UTF-8?Q?=0D=0ABcc:_x?=` turns into a line break on the way out (Python 3.11 before 3.11.10 even
writes it raw). We therefore decode encoded words until nothing changes, reject CR, LF and NUL at
every stage, and hand the email package plain decoded text with no encoded words left in it.
"""

from __future__ import annotations

from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
import re
import unicodedata

from .errors import HeaderInjection

_LINE_BREAK_OR_NUL = re.compile(r"[\r\n\x00]")
_MAX_DECODE_ROUNDS = 4
MAX_DISPLAY_NAME = 120
_header_factory = policy.default.header_factory


def _has_break(value: str) -> bool:
    return _LINE_BREAK_OR_NUL.search(value) is not None


def _other_decodings(value: str) -> list[str]:
    """What a legacy (`email.header`) reader would see; a value it cannot decode is left as is."""
    try:
        return [str(make_header(decode_header(value)))]
    except (HeaderParseError, LookupError, UnicodeError):
        # Not decodable by this reader, so it shows the raw text, which was already checked.
        return []


def decode_words(value: str) -> str:
    """One round of RFC 2047 decoding, as `policy.default` does for an unstructured header."""
    return str(_header_factory("subject", value))


def clean_header_text(value: str, field: str) -> str:
    """Return `value` decoded, checked and with whitespace runs collapsed to single spaces.

    Raises HeaderInjection if CR, LF or NUL appear in the raw or any decoded form, or if other
    control characters remain.
    """
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    text = value
    for _ in range(_MAX_DECODE_ROUNDS):
        if _has_break(text) or any(_has_break(d) for d in _other_decodings(text)):
            raise HeaderInjection(
                f"the {field} contains a line break or NUL character", field=field
            )
        decoded = decode_words(text)
        if decoded == text:
            break
        text = decoded
    else:
        raise HeaderInjection(
            f"the {field} contains nested encoded text that cannot be sent safely", field=field
        )
    text = " ".join(text.split())
    if decode_words(text) != text:
        raise HeaderInjection(
            f"the {field} contains encoded text that cannot be sent safely", field=field
        )
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        raise HeaderInjection(f"the {field} contains control characters", field=field)
    return text


def clean_display_name(name: str, field: str) -> str:
    """`clean_header_text`, and names longer than MAX_DISPLAY_NAME characters are shortened."""
    text = clean_header_text(name, field)
    if len(text) > MAX_DISPLAY_NAME:
        text = text[: MAX_DISPLAY_NAME - 1].rstrip() + "…"
    return text
