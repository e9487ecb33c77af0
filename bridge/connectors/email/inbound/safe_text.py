"""Text from mail that is shown as a name: no invisible or direction-changing characters.

`invoice\u202efdp.exe` shows as `invoiceexe.pdf`, and an RTL override in a display name can
make the address beside it read backwards. Every format character (Unicode category Cf: bidi
embeddings, overrides and isolates, zero-width spaces and joiners, soft hyphens, tag characters)
is removed; names are NFKC-normalised so that mathematical or full-width letters read as the
plain letters they imitate; a display name that shows an address other than its own is dropped.
"""

from __future__ import annotations

import re
import unicodedata

_ADDRESS_LIKE = re.compile(r"[^\s<>()\"']+@[^\s<>()\"']+\.[^\s<>()\"']+")
# Marks, embeddings, overrides and isolates: what reorders the text around them.
_BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def strip_bidi_controls(text: str) -> str:
    """`text` without bidi controls (for running text such as subjects, where other format
    characters like soft hyphens are part of the author's text)."""
    return text if text.isascii() else _BIDI_CONTROLS.sub("", text)


def strip_format_chars(text: str) -> str:
    """`text` without Unicode format characters (bidi controls, zero-width characters)."""
    if text.isascii():
        return text
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def safe_name_text(text: str) -> str:
    """Display text for names and subjects: format characters removed, NFKC, spaces collapsed."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", strip_format_chars(text))
    return " ".join(text.split())


def safe_display_name(name: str, address: str) -> str:
    """The display name to show beside `address`, or "" when it would mislead."""
    name = safe_name_text(name).strip("\"' ")
    for shown in _ADDRESS_LIKE.findall(name):
        if shown.strip(".,;:").casefold() != address.casefold():
            return ""
    return name
