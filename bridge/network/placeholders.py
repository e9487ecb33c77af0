"""Placeholder URLs: how a connector's converted content refers to files the core uploads.

A connector puts `placeholder(key)` wherever a real `mxc://` URL belongs (an event's `url`, an
`<img src>` inside `formatted_body`) and hands the file over as a `MediaUpload` with that key. The
core uploads the files and calls `substitute_placeholders` before sending. A placeholder is a whole
token: `…/att10` is its own key, never `…/att1` followed by "0".
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import re
from typing import Any

PLACEHOLDER_PREFIX = "mxc://letterbox.placeholder/"
KEY_CHARACTERS = "A-Za-z0-9_.-"
_TOKEN = re.compile(re.escape(PLACEHOLDER_PREFIX) + f"([{KEY_CHARACTERS}]+)")
_KEY = re.compile(f"[{KEY_CHARACTERS}]+")


class UnknownPlaceholder(LookupError):
    """Content refers to a file that was not handed over for upload (a connector bug)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"content refers to {PLACEHOLDER_PREFIX}{key}, but no file has that key")
        self.key = key


def placeholder(key: str) -> str:
    """The URL that stands for the upload `key` until the core has uploaded it."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"placeholder key {key!r} has characters outside {KEY_CHARACTERS}")
    return PLACEHOLDER_PREFIX + key


def substitute_placeholders(content: Any, urls: Mapping[str, str]) -> Any:
    """A copy of `content` with every placeholder token replaced by `urls[key]`.

    Works on nested dicts and lists and inside strings (HTML). Raises `UnknownPlaceholder` for a
    token whose key has no URL, so nothing is sent pointing nowhere.
    """
    if isinstance(content, dict):
        return {k: substitute_placeholders(v, urls) for k, v in content.items()}
    if isinstance(content, list):
        return [substitute_placeholders(v, urls) for v in content]
    if isinstance(content, str) and PLACEHOLDER_PREFIX in content:
        return _TOKEN.sub(lambda m: _url(urls, m.group(1)), content)
    return content


def _url(urls: Mapping[str, str], key: str) -> str:
    try:
        return urls[key]
    except KeyError:
        raise UnknownPlaceholder(key) from None


def referenced_keys(content: Any) -> list[str]:
    """Upload keys that `content` refers to, in order of first appearance."""
    found = _TOKEN.findall(json.dumps(content, ensure_ascii=False))
    return list(dict.fromkeys(found))
