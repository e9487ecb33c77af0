"""Media in encrypted rooms: files as the spec's `file` objects, inline images as their own events.

In an encrypted room every file is uploaded encrypted, and an event refers to it with a `file`
object (URL plus key, IV and hash) instead of `url`. HTML cannot refer to an encrypted file —
clients only render plain `mxc://` URLs in `<img>` — so an image shown inside a message's HTML
becomes a short "[image: name]" there, and the image itself follows as an `m.image` event of its
own (part `<part>.img.<key>`), which clients decrypt and show.
"""

from __future__ import annotations

import copy
from html import escape
import re
from typing import Any

from ..network.events import ConvertedPart, MediaUpload
from ..network.placeholders import PLACEHOLDER_PREFIX, placeholder

_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_SRC = re.compile(r"""\bsrc\s*=\s*["']?""" + re.escape(PLACEHOLDER_PREFIX)
                  + r"""([A-Za-z0-9_.\-]+)""", re.IGNORECASE)
_ALT = re.compile(r"""\balt\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)

Part = tuple[str, ConvertedPart]  # (part ID, part)


def inline_part_id(part_id: str, key: str) -> str:
    return f"{part_id}.img.{key}"


def split_inline_images(parts: list[Part], uploads: dict[str, MediaUpload]) -> list[Part]:
    """Parts for an encrypted room: every `<img>` of an upload leaves the HTML and follows its
    message as an `m.image` part."""
    result: list[Part] = []
    for part_id, part in parts:
        content = part.content
        html = content.get("formatted_body")
        if not isinstance(html, str) or PLACEHOLDER_PREFIX not in html:
            result.append((part_id, part))
            continue
        keys: list[str] = []

        def replace(tag: re.Match[str], keys: list[str] = keys) -> str:
            src = _SRC.search(tag.group(0))
            if src is None or src.group(1) not in uploads:
                return tag.group(0)
            key = src.group(1)
            if key not in keys:
                keys.append(key)
            alt = _ALT.search(tag.group(0))
            label = (alt.group(1) or alt.group(2)) if alt else ""
            return f"<em>[image: {escape(label or uploads[key].filename)}]</em>"

        new = copy.deepcopy(content)
        new["formatted_body"] = _IMG.sub(replace, html)
        result.append((part_id, ConvertedPart(part.event_type, new, part.part_id)))
        for key in keys:
            upload = uploads[key]
            result.append((inline_part_id(part_id, key), ConvertedPart("m.room.message", {
                "msgtype": "m.image", "body": upload.filename, "filename": upload.filename,
                "url": placeholder(key),
                "info": {"mimetype": upload.mimetype, "size": len(upload.data)},
                "m.mentions": {},
            }, inline_part_id(part_id, key))))
    return result


def attach_files(content: Any, files: dict[str, dict[str, Any]]) -> Any:
    """A copy of `content` where each `url`/`thumbnail_url` naming an upload is replaced by
    `file`/`thumbnail_file` (the encrypted file's object)."""
    if isinstance(content, list):
        return [attach_files(v, files) for v in content]
    if not isinstance(content, dict):
        return content
    out: dict[str, Any] = {}
    for name, value in content.items():
        if name in ("url", "thumbnail_url") and isinstance(value, str) \
                and value.startswith(PLACEHOLDER_PREFIX) \
                and value[len(PLACEHOLDER_PREFIX):] in files:
            target = "file" if name == "url" else "thumbnail_file"
            out[target] = dict(files[value[len(PLACEHOLDER_PREFIX):]])
        else:
            out[name] = attach_files(value, files)
    return out
