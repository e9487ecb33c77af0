"""Configuration: a commented YAML file (round-tripped by ruamel.yaml) plus environment overrides."""

from __future__ import annotations

import base64
from collections.abc import Mapping
import copy
from importlib import resources
import io
import logging
import os
from pathlib import Path
import secrets as _secrets
from typing import Any
from urllib.parse import urlsplit

from mautrix.util.config import RecursiveDict
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from ..network.errors import ConfigError

__all__ = ["Config", "ConfigError", "compose_example", "core_example"]

log = logging.getLogger("letterbox.config")

ENV_PREFIX = "LETTERBOX_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Free-form maps: their keys are data, not options.
_FREE_MAPS = {"bridge.permissions", "bridge.secrets.old_keys"}


def parse_yaml(yaml: YAML, text: str, path: Path) -> Any:
    """The document in `text`; ConfigError with one line naming the file and place if it is
    not YAML."""
    try:
        return yaml.load(text)
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(str(path), f"not valid YAML ({problem}{where})") from None


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.indent(mapping=4, sequence=4, offset=2)
    yaml.width = 100
    return yaml


def core_example() -> str:
    return resources.files("bridge").joinpath("example-config.yaml").read_text("utf-8")


def compose_example(connector_name: str, connector_example: str) -> str:
    """The full example config: the core's, with the connector's section under `network`."""
    section = "\n".join(
        ("        " + line) if line.strip() else "" for line in connector_example.rstrip().splitlines()
    )
    return (
        core_example().rstrip()
        + "\n\n# Settings of the network connector.\nnetwork:\n"
        + f"    {connector_name}:\n{section}\n"
    )


def _unknown_keys(data: Any, base: Any, prefix: str = "") -> list[str]:
    found: list[str] = []
    if not isinstance(data, dict) or not isinstance(base, dict) or prefix.rstrip(".") in _FREE_MAPS:
        return found
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in base:
            found.append(path)
        else:
            found.extend(_unknown_keys(value, base[key], path + "."))
    return found


def _missing_keys(data: Any, base: Any, prefix: str = "") -> list[str]:
    found: list[str] = []
    if not isinstance(base, dict) or prefix.rstrip(".") in _FREE_MAPS:
        return found
    for key, value in base.items():
        path = f"{prefix}{key}"
        if not isinstance(data, dict) or key not in data:
            found.append(path)
        else:
            found.extend(_missing_keys(data[key], value, path + "."))
    return found


# Where and who the bridge is: never taken from the example when missing.
_OWN_SETTINGS = (
    "homeserver.address", "homeserver.domain", "appservice.address", "appservice.hostname",
    "appservice.port", "appservice.id", "appservice.bot_username", "appservice.as_token",
    "appservice.hs_token", "appservice.username_template", "database.url", "bridge.connector",
    "bridge.permissions", "bridge.secrets.key",
)


class Config(RecursiveDict[CommentedMap]):
    """The loaded config. `config["appservice.port"]` style access; saving keeps comments."""

    def __init__(self, path: Path, data: CommentedMap, example: CommentedMap) -> None:
        super().__init__(data, CommentedMap)
        self.path = path
        self.example = example
        self.unknown_keys = _unknown_keys(data, example)
        # Options missing from the file that took the example's value (see validate).
        self.defaulted: list[str] = []

    @classmethod
    def load(cls, path: Path, example_text: str) -> Config:
        yaml = _yaml()
        example = yaml.load(example_text)
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            raise ConfigError(str(path), "file not found (copy config.example.yaml)") from None
        data = parse_yaml(yaml, text, path)
        if not isinstance(data, CommentedMap):
            raise ConfigError(str(path), "the top level must be a mapping")
        return cls(path, data, example)

    def apply_env(self, environ: Mapping[str, str] | None = None) -> None:
        """Override options from LETTERBOX_SECTION__KEY variables (values parsed as YAML scalars)."""
        for name, value in (os.environ if environ is None else environ).items():
            if not name.startswith(ENV_PREFIX):
                continue
            key = name[len(ENV_PREFIX):].lower().replace("__", ".")
            parsed = _yaml().load(value) if value else value
            self[key] = value if isinstance(parsed, (dict, list)) else parsed

    def report_unknown(self) -> None:
        for key in self.unknown_keys:
            log.warning("Unknown config option %s is ignored (typo? see config.example.yaml)", key)
        if self.defaulted:
            log.info("Options not in %s use their defaults from the example: %s",
                     self.path, ", ".join(self.defaulted))

    def require(self, key: str, kind: type | tuple[type, ...]) -> Any:
        value = self.get(key, None)
        if value is None:
            raise ConfigError(key, "missing")
        if (isinstance(kind, tuple) and int in kind) or kind is int:
            if isinstance(value, bool):
                raise ConfigError(key, "must be a number")
        if not isinstance(value, kind):
            name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(key, f"must be of type {name}, got {value!r}")
        return value

    def validate(self, connector_name: str) -> None:
        """Check every core option; the first problem raises ConfigError naming the key.

        An option the config file does not have takes the example's value (a config written by
        an older version gains the options added since), except the ones that say where and who
        the bridge is: those must be in the file.
        """
        for key in _missing_keys(self._data, self.example):
            if key.startswith("network."):
                continue
            if any(key == k or k.startswith(key + ".") for k in _OWN_SETTINGS):
                raise ConfigError(key, "missing (see config.example.yaml)")
            self[key] = copy.deepcopy(RecursiveDict(self.example, CommentedMap)[key])
            self.defaulted.append(key)
        for key in ("homeserver.address", "homeserver.domain", "appservice.address",
                    "appservice.hostname", "appservice.id", "appservice.bot_username",
                    "appservice.as_token", "appservice.hs_token", "database.url",
                    "bridge.connector", "appservice.username_template"):
            if not str(self.require(key, str)).strip():
                raise ConfigError(key, "must not be empty")
        port = self.require("appservice.port", int)
        if not 0 < port < 65536:
            raise ConfigError("appservice.port", "must be between 1 and 65535")
        if self["double_puppet.enabled"] and self.get("double_puppet.as_token", "generate") in (
                "generate", None, ""):
            raise ConfigError("double_puppet.as_token", "not generated yet: run `python -m bridge -g`")
        for key in ("appservice.as_token", "appservice.hs_token"):
            if self[key] == "generate":
                raise ConfigError(key, "not generated yet: run `python -m bridge -g`")
        if "{userid}" not in self["appservice.username_template"]:
            raise ConfigError("appservice.username_template", "must contain {userid}")
        if not str(self["database.url"]).startswith(("sqlite:", "postgres://", "postgresql://")):
            raise ConfigError("database.url", "must start with sqlite: or postgresql://")
        if self.require("provisioning.enabled", bool):
            secret = str(self.require("provisioning.shared_secret", str))
            if secret == "generate":
                raise ConfigError("provisioning.shared_secret", "not generated yet: run "
                                  "`python -m bridge -g`")
            if len(secret) < 32:
                raise ConfigError("provisioning.shared_secret", "too short: use at least 32 "
                                  "random characters (or `generate` and -g)")
            port = self.require("provisioning.port", int)
            if not 0 < port < 65536:
                raise ConfigError("provisioning.port", "must be between 1 and 65535")
        if self.require("metrics.enabled", bool):
            port = self.require("metrics.port", int)
            if not 0 < port < 65536:
                raise ConfigError("metrics.port", "must be between 1 and 65535")
        level = str(self.require("logging.level", str)).upper()
        if level not in LOG_LEVELS:
            raise ConfigError("logging.level", f"{self['logging.level']!r} is not a level; use one "
                              f"of {', '.join(LOG_LEVELS)}")
        perms = self.require("bridge.permissions", dict)
        for who, level in perms.items():
            if level not in ("relay", "user", "admin"):
                raise ConfigError(f"bridge.permissions.{who}", "level must be relay, user or admin")
        if self.require("bridge.retention.event_ids_days", (int, float)) <= 0:
            raise ConfigError("bridge.retention.event_ids_days", "must be a positive number of days")
        key = str(self.require("bridge.secrets.key", str))
        if key == "generate":
            raise ConfigError("bridge.secrets.key", "not generated yet: run `python -m bridge -g`")
        try:
            if len(base64.b64decode(key, validate=True)) != 32:
                raise ValueError
        except ValueError:
            raise ConfigError("bridge.secrets.key", "must be base64 of 32 bytes") from None
        for key in ("encryption.allow", "encryption.default", "encryption.msc4190",
                    "encryption.allow_key_sharing", "double_puppet.enabled"):
            self.require(key, bool)
        if self.require("encryption.decrypt_timeout", (int, float)) < 0:
            raise ConfigError("encryption.decrypt_timeout", "must not be negative")
        for key in ("encryption.rotation.period_ms", "encryption.rotation.messages"):
            if self.require(key, int) <= 0:
                raise ConfigError(key, "must be a positive number")
        public_url = self.get("bridge.public_url", None)
        if public_url is not None:
            if not isinstance(public_url, str) or not public_url.startswith(("https://", "http://")):
                raise ConfigError("bridge.public_url", "must be an http(s) URL or null")
            host = (urlsplit(public_url).hostname or "").lower()
            if public_url.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
                raise ConfigError("bridge.public_url", "must be https:// (http only on loopback)")
        self._validate_workers()
        if not isinstance(self.get(f"network.{connector_name}", None), dict):
            raise ConfigError(f"network.{connector_name}", "missing connector section")

    def _validate_workers(self) -> None:
        if not self.require("workers.enabled", bool):
            return
        if not str(self["database.url"]).startswith(("postgres://", "postgresql://")):
            raise ConfigError("workers.enabled", "needs PostgreSQL (database.url): SQLite is "
                              "single-process")
        if self.get("workers.id", None) is not None and not str(self["workers.id"]).strip():
            raise ConfigError("workers.id", "must not be empty (null: hostname and process ID)")
        if self.require("workers.lease_seconds", (int, float)) < 2:
            raise ConfigError("workers.lease_seconds", "must be at least 2 seconds")
        for key, what in (("encryption.allow", "end-to-bridge encryption"),
                          ("provisioning.enabled", "the provisioning API")):
            if self[key]:
                raise ConfigError(key, f"must be false with workers.enabled ({what} is not "
                                  "available with several workers yet)")

    def generate_secrets(self) -> None:
        for key in ("appservice.as_token", "appservice.hs_token", "double_puppet.as_token"):
            if self.get(key, "generate") in ("generate", None, ""):
                self[key] = _secrets.token_urlsafe(48)
        if self.get("provisioning.shared_secret", "generate") in ("generate", None, ""):
            self["provisioning.shared_secret"] = _secrets.token_urlsafe(48)
        if self.get("bridge.secrets.key", "generate") in ("generate", None, ""):
            self["bridge.secrets.key"] = base64.b64encode(_secrets.token_bytes(32)).decode()

    def dump(self) -> str:
        buf = io.StringIO()
        _yaml().dump(self._data, buf)
        return buf.getvalue()

    def save(self) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(self.dump(), "utf-8")
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)
