"""Turning bytes from a mail into text when the declared charset is wrong, unknown or missing."""

from __future__ import annotations

import codecs
import re
import unicodedata

from charset_normalizer import from_bytes

# Labels seen in real mail that Python does not know, or that are better read as a superset
# (the same mapping browsers apply: a "latin-1" label almost always means windows-1252).
_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ks_c_5601-1989": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "ascii",
    "x-sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "windows-31j": "cp932",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "utf8": "utf-8",
}
# Labels that say nothing about the actual encoding.
_NO_CHARSET = {"", "unknown-8bit", "x-unknown", "unknown", "default", "charset", "8bit", "none"}
# Sample size for detection: enough to be confident, small enough to stay fast on huge bodies.
_DETECT_SAMPLE = 64 * 1024


def lookup_codec(label: str | None) -> str | None:
    """The Python codec name for a MIME charset label, or None if it is unknown or empty."""
    if label is None:
        return None
    label = label.strip().strip("\"'").lower()
    if label in _NO_CHARSET:
        return None
    label = _ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    # utf-7 can smuggle markup past filters and is never what a modern mail means.
    if info.name in ("utf-7", "rot-13") or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Encodings that real mail uses; detection among all Python codecs finds UTF-16 or cp1006 in a
# few Latin-1 bytes.
_MAIL_CODECS = [
    "utf_8", "cp1252", "cp1250", "cp1251", "koi8_r", "koi8_u", "cp1253", "cp1254", "cp1255",
    "cp1256", "cp1257", "cp874", "iso8859_2", "iso8859_5", "iso8859_7", "iso8859_15",
    "shift_jis", "cp932", "euc_jp", "gb18030", "big5", "cp949", "euc_kr", "mac_roman",
]  # fmt: skip
_MULTIBYTE = {
    "shift_jis",
    "cp932",
    "euc_jp",
    "gb18030",
    "big5",
    "big5hkscs",
    "cp949",
    "euc_kr",
    "utf-8",
}
_SHORT = 200
_WORD = re.compile(r"[^\W\d_]+")


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0]


def _plausibility(text: str) -> int:
    """Higher for text whose words each use one script, like real words do.

    A word made only of accented Latin letters ("Ïðèâåò") is what Cyrillic read as windows-1252
    looks like, so it counts against.
    """
    score = 0
    for word in _WORD.findall(text):
        if word.isascii():
            continue
        scripts = {_script(ch) for ch in word}
        implausible = len(scripts) > 1 or (
            scripts == {"LATIN"} and len(word) >= 3 and not any(c.isascii() for c in word)
        )
        score += -len(word) if implausible else len(word)
    return score


def _short_guess(data: bytes) -> str:
    """windows-1252 or windows-1251 for a few words of undeclared 8-bit text."""
    best, best_score = "cp1252", None
    for codec in ("cp1252", "cp1251"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        score = _plausibility(text)
        if best_score is None or score > best_score:
            best, best_score = codec, score
    return best


def detect(data: bytes) -> str | None:
    """Best guess of the codec of `data` (None when nothing fits).

    On short samples (headers, file names) statistics say little: a multi-byte (CJK) guess is
    kept, otherwise windows-1252 and windows-1251 are weighed by how word-like the result is.
    """
    best = from_bytes(data[:_DETECT_SAMPLE], cp_isolation=_MAIL_CODECS).best()
    codec = lookup_codec(best.encoding) if best is not None else None
    if len(data) >= _SHORT or codec in _MULTIBYTE:
        return codec
    return _short_guess(data)


def decode_bytes(data: bytes, declared: str | None = None, hint: str | None = None) -> str:
    """Decode text bytes, trusting `declared` only when the bytes agree with it.

    Order: the declared charset if the bytes decode cleanly (but valid non-ASCII UTF-8 wins over a
    single-byte label, the most common wrong declaration), then UTF-8, then `hint` (a charset
    declared elsewhere in the same mail), then detection, then the declared charset or
    windows-1252 with replacement characters.
    """
    if not data:
        return ""
    codec = lookup_codec(declared)
    if codec is not None and not _ascii_compatible(codec):
        # UTF-16/32 text can consist of bytes that all look like ASCII.
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    if b"\x1b" in data and data.isascii():
        # 7-bit ISO-2022 (Japanese/Korean/Chinese), often sent without any declaration.
        for candidate in (codec, "iso2022_jp_ext", "iso2022_kr"):
            if candidate and candidate.startswith("iso2022"):
                try:
                    return data.decode(candidate)
                except UnicodeDecodeError:
                    continue
    if data.isascii():
        return data.decode("ascii")
    if codec is not None and codec != "ascii":
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            pass
        else:
            if codec == "utf-8" or _single_byte(codec) is False or not _is_utf8(data):
                return text
    if _is_utf8(data):
        return data.decode("utf-8")
    hinted = lookup_codec(hint)
    if hinted is not None and hinted not in ("ascii", "utf-8") and codec is None:
        try:
            return data.decode(hinted)
        except UnicodeDecodeError:
            pass
    guessed = detect(data)
    if guessed is not None:
        return data.decode(guessed, errors="replace")
    return data.decode(codec if codec not in (None, "ascii") else "cp1252", errors="replace")


def _ascii_compatible(codec: str) -> bool:
    try:
        return "Az09 ".encode(codec) == b"Az09 "
    except UnicodeEncodeError:
        return False


def _single_byte(codec: str) -> bool:
    try:
        return len("\u00e9".encode(codec)) == 1
    except UnicodeEncodeError:
        # A codec without é: single-byte if its first non-ASCII byte decodes alone.
        try:
            b"\xc0".decode(codec)
        except UnicodeDecodeError:
            return False
        return True


def fix_surrogates(value: str, hint: str | None = None) -> str:
    """Re-decode raw 8-bit bytes that the stdlib parser kept as surrogate escapes."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"), None, hint)
