"""The `network.email` config section, validated into a typed record."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from ...network import ConfigError
from .authenticity import TrustSettings
from .nameserver import Nameserver
from .oauth.providers import OAuthProvider, parse_providers
from .server_policy import ServerPolicy

SECTION = "network.email"


def example_config() -> str:
    return resources.files(__package__).joinpath("example-config.yaml").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class EmailConfig:
    """The section, typed. Its defaults are those of example-config.yaml, and only there."""

    ca_file: str | None
    timeout: float
    extra_folders: list[str]
    sync_sent: bool
    idle_renew_s: float
    poll_interval_s: float
    use_notify: bool
    connect_concurrency: int
    backfill_days: int
    backfill_messages: int
    max_message_bytes: int
    max_mime_depth: int
    max_parts: int
    max_header_bytes: int
    parse_time_budget: float
    max_recipients: int
    max_mails_per_hour: int
    retry_schedule: list[float]
    idle_close_s: float
    send_edits: bool
    send_reactions: bool
    oauth_providers: tuple[OAuthProvider, ...]
    discovery: bool
    discovery_timeout: float
    nameserver: Nameserver | None
    keep_sent_days: float
    server_policy: ServerPolicy
    max_people_per_mail: int
    trust: TrustSettings

    @classmethod
    def defaults(cls) -> EmailConfig:
        return parse_config(YAML(typ="safe").load(example_config()))


def _get(section: dict[str, Any], path: str, kind: type | tuple[type, ...]) -> Any:
    node: Any = section
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{SECTION}.{path}", "missing")
        node = node[part]
    if isinstance(node, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{SECTION}.{path}", "must be a number")
    if node is not None and not isinstance(node, kind):
        raise ConfigError(f"{SECTION}.{path}", f"has the wrong type ({type(node).__name__})")
    return node


def _positive(section: dict[str, Any], path: str) -> float:
    value = _get(section, path, (int, float))
    if value is None or value <= 0:
        raise ConfigError(f"{SECTION}.{path}", "must be a positive number")
    return float(value)


def _nameserver(section: dict[str, Any]) -> Nameserver | None:
    value = _get(section, "dns.nameserver", str)
    if value is None:
        return None
    try:
        return Nameserver.parse(value)
    except ValueError:
        raise ConfigError(f"{SECTION}.dns.nameserver",
                          "must be host or host:port, e.g. 127.0.0.1:53") from None


def _trust(section: dict[str, Any]) -> TrustSettings:
    ids = _get(section, "authenticity.trusted_authserv_ids", dict) or {}
    for scope, values in ids.items():
        if not isinstance(scope, str) or not isinstance(values, list) or not all(
                isinstance(v, str) and v.strip() for v in values):
            raise ConfigError(f"{SECTION}.authenticity.trusted_authserv_ids",
                              "maps a login address, a domain or * to a list of authserv-ids")
    return TrustSettings(
        trusted_authserv_ids={k: [v.strip() for v in vs] for k, vs in ids.items()},
        verify_dkim=bool(_get(section, "authenticity.verify_dkim", bool)),
        nameserver=_nameserver(section),
        dns_timeout=_positive(section, "authenticity.dns_timeout"),
        quarantine=bool(_get(section, "authenticity.quarantine", bool)),
    )


def parse_config(section: dict[str, Any]) -> EmailConfig:
    ca_file = _get(section, "ca_file", str)
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"{SECTION}.ca_file", f"file {ca_file} does not exist")
    renew = _positive(section, "imap.idle_renew_minutes")
    if renew >= 29:
        raise ConfigError(f"{SECTION}.imap.idle_renew_minutes", "must be below 29 (servers end IDLE at 30)")
    schedule = _get(section, "outbound.retry_schedule", list)
    if not schedule or not all(isinstance(x, (int, float)) and x > 0 for x in schedule):
        raise ConfigError(f"{SECTION}.outbound.retry_schedule", "must be a list of positive seconds")
    try:
        server_policy = ServerPolicy.parse(_get(section, "allowed_private_servers", list) or [])
    except ValueError as e:
        raise ConfigError(f"{SECTION}.allowed_private_servers", str(e)) from None
    keep_sent = _positive(section, "outbound.keep_sent_days")
    if keep_sent < 1:
        raise ConfigError(f"{SECTION}.outbound.keep_sent_days",
                          "must be at least 1 (the hourly sending limit counts stored mail)")
    folders = _get(section, "imap.extra_folders", list) or []
    if not all(isinstance(f, str) and f for f in folders):
        raise ConfigError(f"{SECTION}.imap.extra_folders", "must be a list of folder names")
    return EmailConfig(
        ca_file=ca_file,
        timeout=_positive(section, "timeout"),
        extra_folders=list(folders),
        sync_sent=bool(_get(section, "imap.sync_sent", bool)),
        idle_renew_s=renew * 60,
        poll_interval_s=_positive(section, "imap.poll_interval"),
        use_notify=bool(_get(section, "imap.notify", bool)),
        connect_concurrency=int(_positive(section, "imap.connect_concurrency")),
        backfill_days=int(_get(section, "backfill.max_age_days", int)),
        backfill_messages=int(_get(section, "backfill.max_messages", int)),
        max_message_bytes=int(_positive(section, "limits.max_message_bytes")),
        max_mime_depth=int(_positive(section, "limits.max_mime_depth")),
        max_parts=int(_positive(section, "limits.max_parts")),
        max_header_bytes=int(_positive(section, "limits.max_header_bytes")),
        parse_time_budget=_positive(section, "limits.parse_time_budget"),
        max_recipients=int(_positive(section, "outbound.max_recipients")),
        max_mails_per_hour=int(_positive(section, "outbound.max_mails_per_hour")),
        retry_schedule=[float(x) for x in schedule],
        idle_close_s=_positive(section, "outbound.idle_close_seconds"),
        send_edits=bool(_get(section, "outbound.send_edits", bool)),
        send_reactions=bool(_get(section, "outbound.send_reactions", bool)),
        oauth_providers=parse_providers(_get(section, "oauth.providers", list)),
        discovery=bool(_get(section, "discovery.enabled", bool)),
        discovery_timeout=_positive(section, "discovery.timeout"),
        nameserver=_nameserver(section),
        keep_sent_days=keep_sent,
        server_policy=server_policy,
        max_people_per_mail=int(_positive(section, "limits.max_people_per_mail")),
        trust=_trust(section),
    )
