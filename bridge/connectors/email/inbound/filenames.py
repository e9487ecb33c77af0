"""Attachment file names: RFC 2231 parameters (continuations, charsets), RFC 2047 words, raw 8-bit.

The stdlib gets most of this right but gives up on unquoted names with spaces and on encoded words
following `name=` without quotes, so parameters are read from the raw header here.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from urllib.parse import unquote_to_bytes

from .charset import decode_bytes, fix_surrogates
from .headers import decode_words
from .safe_text import strip_format_chars

_PARAM_KEY = re.compile(r"^([A-Za-z0-9_.\-]+?)(?:\*(\d+))?(\*)?$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
MAX_FILENAME_CHARS = 200


def _split_params(value: str) -> list[tuple[str, str]]:
    """`key=value` pairs after the first `;`, honouring quotes.

    Unquoted values run to the next `;` (real mail has unquoted names with spaces).
    """
    params: list[tuple[str, str]] = []
    i = value.find(";")
    if i < 0:
        return params
    i += 1
    n = len(value)
    while i < n:
        while i < n and value[i] in " \t\r\n;":
            i += 1
        eq = value.find("=", i)
        if eq < 0:
            break
        key = value[i:eq].strip().lower()
        j = eq + 1
        while j < n and value[j] in " \t\r\n":
            j += 1
        if j < n and value[j] == '"':
            j += 1
            chars: list[str] = []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(value[j])
                j += 1
            param = "".join(chars)
            # Skip the closing quote and anything up to the next separator.
            semi = value.find(";", j)
            i = n if semi < 0 else semi + 1
        else:
            semi = value.find(";", j)
            end = n if semi < 0 else semi
            param = value[j:end].strip()
            i = end + 1
        if key:
            params.append((key, param))
    return params


def get_param(header_value: str | None, name: str, hint: str | None = None) -> str | None:
    """One parameter of a structured header, RFC 2231 and RFC 2047 decoded; None if absent."""
    if not header_value:
        return None
    header_value = re.sub(r"\r?\n[ \t]+", " ", header_value)
    plain: str | None = None
    segments: dict[int, tuple[bool, str]] = {}
    for key, value in _split_params(header_value):
        match = _PARAM_KEY.match(key)
        if not match or match.group(1) != name:
            continue
        number, extended = match.group(2), bool(match.group(3))
        if number is None and not extended:
            if plain is None:
                plain = value
        else:
            index = int(number) if number is not None else 0
            segments.setdefault(index, (extended, value))
    if segments:
        return _join_rfc2231(segments)
    if plain is None:
        return None
    return decode_words(fix_surrogates(plain, hint))


def _join_rfc2231(segments: dict[int, tuple[bool, str]]) -> str:
    charset: str | None = None
    data = bytearray()
    first_index = min(segments)
    for index in sorted(segments):
        extended, value = segments[index]
        if extended:
            if index == first_index and value.count("'") >= 2:
                charset, _lang, value = value.split("'", 2)
            data += unquote_to_bytes(value.encode("utf-8", "surrogateescape"))
        else:
            data += value.encode("utf-8", "surrogateescape")
    text = decode_bytes(bytes(data), charset or None)
    # Some mailers put encoded words inside RFC 2231 values.
    return decode_words(text)


def safe_filename(name: str) -> str:
    """A display/download name: NFC, no path separators, control or format characters (an RTL
    override would disguise the extension), bounded length."""
    name = unicodedata.normalize("NFC", strip_format_chars(name))
    name = _UNSAFE.sub("_", name).strip()
    if name.strip(".") == "":
        return ""
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name


def part_filename(raw: dict[str, list[str]], hint: str | None = None) -> str | None:
    """The declared file name of a part: Content-Disposition filename, else Content-Type name."""
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        for value in raw.get(header, []):
            found = get_param(value, param, hint)
            if found and found.strip():
                cleaned = safe_filename(found)
                if cleaned:
                    return cleaned
    return None


def fallback_filename(mimetype: str, stem: str | None = None) -> str:
    """A made-up name for a part without one, with an extension matching its type."""
    maintype, _, subtype = mimetype.partition("/")
    if mimetype in ("message/rfc822", "message/global"):
        ext = ".eml"
    elif mimetype == "image/jpeg":
        ext = ".jpg"
    else:
        ext = mimetypes.guess_extension(mimetype, strict=False) or (
            ".txt" if maintype in ("text", "message") else ".bin"
        )
    if stem is None:
        # "delivery-status.txt" says more than "attachment.txt" for structured text parts.
        stem = subtype if maintype in ("text", "message") and subtype else "attachment"
    return (safe_filename(stem) or "attachment") + ext
