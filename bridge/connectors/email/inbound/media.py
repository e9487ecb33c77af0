"""Choosing the Matrix msgtype and mimetype of an attachment from its bytes, not its label."""

from __future__ import annotations

import re

import magic

# What libmagic answers when it cannot tell.
_UNKNOWN = {"application/octet-stream", "application/x-empty", "inode/x-empty", ""}
# Container formats: a more specific declared type inside them is plausible (docx is a zip).
_CONTAINERS = {
    "application/zip",
    "application/x-ole-storage",
    "application/cdfv2",
    "application/x-cdf",
}
_TEXTUAL_APPLICATION = re.compile(
    r"^application/(json|xml|.*\+xml|.*\+json|ics|pgp-.*|x-pem-file|javascript|x-sh|rtf|mbox|"
    r"pkcs7-.*|x-pkcs7-.*|autocrypt-setup|csv)$"
)
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "audio/mp3": "audio/mpeg",
    "audio/x-mp3": "audio/mpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "application/x-zip-compressed": "application/zip",
    "application/x-zip": "application/zip",
    "application/x-pdf": "application/pdf",
    "video/x-m4v": "video/mp4",
}
# Image types every client shows inline; others (SVG can carry script) go out as files.
_INLINE_IMAGES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/avif"}
_SNIFF_BYTES = 64 * 1024
_MIMETYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+\-]*/[a-z0-9][a-z0-9!#$&^_.+\-]*$")


def _normalise(mimetype: str) -> str:
    mimetype = mimetype.strip().lower().split(";", 1)[0].strip()
    return _ALIASES.get(mimetype, mimetype)


def _textual(mimetype: str) -> bool:
    return mimetype.startswith(("text/", "message/")) or bool(_TEXTUAL_APPLICATION.match(mimetype))


def sniff(data: bytes) -> str:
    return _normalise(magic.from_buffer(data[:_SNIFF_BYTES], mime=True))


def verified_mimetype(data: bytes, declared: str) -> str:
    """The declared type if the content agrees or libmagic cannot tell; else the sniffed type."""
    declared = _normalise(declared)
    if not _MIMETYPE.match(declared):
        declared = "application/octet-stream"
    sniffed = sniff(data)
    if sniffed in _UNKNOWN or sniffed == declared:
        return declared
    if _textual(sniffed) and _textual(declared):
        return declared
    if sniffed in _CONTAINERS and not declared.startswith(("image/", "video/", "audio/", "text/")):
        return declared
    return sniffed


def msgtype_for(mimetype: str) -> str:
    if mimetype in _INLINE_IMAGES:
        return "m.image"
    if mimetype.startswith("video/"):
        return "m.video"
    if mimetype.startswith("audio/"):
        return "m.audio"
    return "m.file"
