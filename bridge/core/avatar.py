"""The bot's avatar, also shown by the spaces the bot creates (`appservice.bot_avatar`).

`default` is the image shipped with the bridge, a path names an image file of the operator's,
an `mxc://` URI is used as it is, and an empty value means none. An image is uploaded once: the
bot keeps the hash and URI of what it uploaded in its own account data, so a restart reuses it.
No avatar is ever fetched from a third party (that would tell it who mails whom).
"""

from __future__ import annotations

import hashlib
from importlib import resources
import logging
from pathlib import Path
from typing import Any, cast

import magic
from mautrix.appservice import IntentAPI
from mautrix.errors import MNotFound
from mautrix.types import JSON, ContentURI

from ..network import ConfigError

log = logging.getLogger("letterbox.avatar")

SETTING = "appservice.bot_avatar"
DEFAULT = "default"
ACCOUNT_DATA_TYPE = "org.letterbox.avatar"
_MAX_BYTES = 1024 * 1024


def packaged_avatar() -> bytes:
    return resources.files("bridge.core").joinpath("assets/avatar.png").read_bytes()


def _image(setting: str) -> bytes:
    if setting == DEFAULT:
        return packaged_avatar()
    try:
        data = Path(setting).read_bytes()
    except OSError as e:
        raise ConfigError(SETTING, f"cannot read {setting}: {e.strerror}; give an image file, "
                          "an mxc:// URI, 'default' or ''") from None
    if len(data) > _MAX_BYTES or not magic.from_buffer(data, mime=True).startswith("image/"):
        raise ConfigError(SETTING, f"{setting} is not an image of at most 1 MiB")
    return data


async def bot_avatar(bot: IntentAPI, setting: str) -> ContentURI | None:
    """The avatar's URI, uploading the image if the bot has not uploaded this one before."""
    setting = setting.strip()
    if not setting:
        return None
    if setting.startswith("mxc://"):
        return ContentURI(setting)
    data = _image(setting)
    digest = hashlib.sha256(data).hexdigest()
    stored: dict[str, Any] = {}
    try:
        found = await bot.get_account_data(ACCOUNT_DATA_TYPE)
        stored = found if isinstance(found, dict) else {}
    except MNotFound:
        pass
    if stored.get("sha256") == digest and str(stored.get("mxc", "")).startswith("mxc://"):
        return ContentURI(str(stored["mxc"]))
    mxc = await bot.upload_media(data, mime_type=magic.from_buffer(data, mime=True),
                                 filename="avatar")
    record = cast("dict[str, JSON]", {"sha256": digest, "mxc": str(mxc)})
    await bot.set_account_data(ACCOUNT_DATA_TYPE, record)
    log.info("Uploaded the bot's avatar (%s)", mxc)
    return mxc
