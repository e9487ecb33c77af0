"""The appservice registration file the homeserver loads."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from .config import Config


def _namespace_regex(template: str, placeholder: str, sigil: str, domain: str) -> str:
    prefix, _, suffix = template.partition(placeholder)
    return f"{sigil}{re.escape(prefix)}.*{re.escape(suffix)}:{re.escape(domain)}"


def build_registration(config: Config) -> dict[str, Any]:
    domain = config["homeserver.domain"]
    bot = config["appservice.bot_username"]
    return {
        "id": config["appservice.id"],
        "url": config["appservice.address"],
        "as_token": config["appservice.as_token"],
        "hs_token": config["appservice.hs_token"],
        "sender_localpart": bot,
        "rate_limited": False,
        "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True,
        # To-device events, device-list changes and one-time-key counts in transactions.
        "org.matrix.msc3202": True,
        # The bot's device is created with PUT /devices (MSC4190) instead of an appservice login.
        "io.element.msc4190": bool(config.get("encryption.msc4190", True)),
        "namespaces": {
            "users": [
                {
                    "exclusive": True,
                    "regex": _namespace_regex(
                        config["appservice.username_template"], "{userid}", "@", domain
                    ),
                },
                {"exclusive": True, "regex": f"@{re.escape(bot)}:{re.escape(domain)}"},
            ],
            "aliases": [
                {
                    "exclusive": True,
                    "regex": _namespace_regex(
                        config["appservice.alias_template"], "{alias}", "#", domain
                    ),
                }
            ],
            "rooms": [],
        },
    }


def build_double_puppet_registration(config: Config) -> dict[str, Any]:
    """The second registration of double puppeting: its as_token may act as any local user; it
    receives nothing (no URL) and reserves no namespace (not exclusive)."""
    domain = config["homeserver.domain"]
    return {
        "id": f"{config['appservice.id']}-doublepuppet",
        "url": None,
        "as_token": config["double_puppet.as_token"],
        "hs_token": hashlib.sha256(str(config["double_puppet.as_token"]).encode()).hexdigest(),
        "sender_localpart": f"{config['appservice.bot_username']}-doublepuppet",
        "rate_limited": False,
        "namespaces": {"users": [{"exclusive": False, "regex": f"@.*:{re.escape(domain)}"}]},
    }
