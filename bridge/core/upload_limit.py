"""The homeserver's upload size limit, and what a message says about a file over it."""

from __future__ import annotations

import logging
import time

from mautrix.api import HTTPAPI, MediaPath, Method, Path
from mautrix.errors import MatrixRequestError

from ..network.events import ConvertedPart, MediaUpload
from ..network.placeholders import PLACEHOLDER_PREFIX, referenced_keys

log = logging.getLogger("letterbox.media")

#: How long a fetched limit is trusted before it is asked for again.
REFRESH_S = 600.0


class UploadLimit:
    """`m.upload.size` from `/_matrix/client/v1/media/config` (the older media path as a
    fallback), cached for `REFRESH_S`. None when the homeserver does not say."""

    def __init__(self, api: HTTPAPI) -> None:
        self._api = api
        self._value: int | None = None
        self._fetched_at = -REFRESH_S

    async def get(self) -> int | None:
        if time.monotonic() - self._fetched_at < REFRESH_S:
            return self._value
        for path in (Path.v1.media.config, MediaPath.v3.config):
            try:
                config = await self._api.request(Method.GET, path)
            except MatrixRequestError as e:
                log.debug("No media config at %s: %s", path, e)
                continue
            size = config.get("m.upload.size")
            self._value = size if isinstance(size, int) and size > 0 else None
            self._fetched_at = time.monotonic()
            return self._value
        return self._value


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def too_large_text(filename: str, size: int, limit: int | None) -> str:
    """The notice that stands in for a file the homeserver cannot take."""
    if limit:
        why = f"the homeserver accepts files up to {human_size(limit)}"
    else:
        why = "the homeserver refused it as too large"
    return f"{filename} ({human_size(size)}) is not shown here: {why}. Open the original message to get it."


def replace_too_large(parts: list[tuple[str, ConvertedPart]], too_large: dict[str, MediaUpload],
                      limit: int | None) -> list[tuple[str, ConvertedPart]]:
    """`parts` with every file event whose upload is in `too_large` replaced by a notice naming
    the file and its size; a file referenced inline (an image in HTML) keeps its part and gets
    such a notice after the message's last part."""
    if not too_large:
        return parts
    out: list[tuple[str, ConvertedPart]] = []
    tail: list[tuple[str, ConvertedPart]] = []
    for part_id, part in parts:
        url = part.content.get("url")
        key = url[len(PLACEHOLDER_PREFIX):] if isinstance(url, str) and url.startswith(PLACEHOLDER_PREFIX) else None
        if key in too_large:
            out.append((part_id, _notice(too_large[key], limit)))
            continue
        out.append((part_id, part))
        tail += [(f"{part_id}.too-large.{k}", _notice(too_large[k], limit))
                 for k in referenced_keys(part.content) if k in too_large]
    return out + tail


def _notice(upload: MediaUpload, limit: int | None) -> ConvertedPart:
    text = too_large_text(upload.filename, len(upload.data), limit)
    return ConvertedPart("m.room.message", {"msgtype": "m.notice", "body": text, "m.mentions": {}})
