"""OAuth 2.0 providers of mailboxes: the Google and Microsoft presets and operator-defined ones.

A preset owns what a provider publishes (endpoints, the mail scopes, its IMAP/SMTP servers, the
domains and MX hosts of the mailboxes it serves); the operator's config adds the client ID and
secret of the bridge's registration with that provider, and may override any of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ....network import ConfigError
from ..servers import ServerSpec, parse_spec

SECTION = "network.email.oauth.providers"


@dataclass(frozen=True, slots=True)
class OAuthProvider:
    id: str
    name: str
    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]
    imap: ServerSpec
    smtp: ServerSpec
    #: address domains whose mailboxes this provider serves
    domains: tuple[str, ...] = ()
    #: MX host name suffixes of domains hosted by this provider (custom domains)
    mx_suffixes: tuple[str, ...] = ()
    #: extra authorization-request parameters (e.g. to be given a refresh token)
    authorize_params: dict[str, str] = field(default_factory=dict)
    client_id: str = ""
    client_secret: str | None = None
    #: where the provider sends the browser when the bridge has no public URL: the user copies
    #: the address it shows (a loopback address nothing answers on is fine)
    paste_redirect_uri: str = "http://localhost/"
    #: a sentence on what to do if signing in is not allowed, in the provider's words
    hint: str = ""

    def serves(self, domain: str) -> bool:
        return domain.lower() in self.domains


PRESETS: dict[str, OAuthProvider] = {
    "google": OAuthProvider(
        id="google", name="Google",
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        token_url="https://oauth2.googleapis.com/token",
        scopes=("https://mail.google.com/",),
        imap=ServerSpec("imap.gmail.com", 993, "tls"),
        smtp=ServerSpec("smtp.gmail.com", 465, "tls"),
        domains=("gmail.com", "googlemail.com"),
        mx_suffixes=(".google.com", ".googlemail.com"),
        # a refresh token is only issued with offline access, and again only with consent
        authorize_params={"access_type": "offline", "prompt": "consent"},
        hint="Google: if you use 2-Step Verification and prefer a password, create an app "
             "password at https://myaccount.google.com/apppasswords",
    ),
    "microsoft": OAuthProvider(
        id="microsoft", name="Microsoft",
        authorize_url="https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        token_url="https://login.microsoftonline.com/common/oauth2/v2.0/token",
        scopes=("https://outlook.office.com/IMAP.AccessAsUser.All",
                "https://outlook.office.com/SMTP.Send", "offline_access"),
        imap=ServerSpec("outlook.office365.com", 993, "tls"),
        smtp=ServerSpec("smtp.office365.com", 587, "starttls"),
        domains=("outlook.com", "hotmail.com", "live.com", "msn.com"),
        mx_suffixes=(".mail.protection.outlook.com", ".olc.protection.outlook.com"),
        hint="Microsoft 365: your administrator must allow IMAP and \"Authenticated SMTP\" for "
             "your mailbox (Microsoft 365 admin center > Users > Mail > Manage email apps).",
    ),
}

_KEYS = {"preset", "id", "name", "client_id", "client_secret", "authorize_url", "token_url",
         "scopes", "imap", "smtp", "domains", "mx_suffixes", "paste_redirect_uri", "hint"}


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(where, "must be a list of strings")
    return tuple(value)


def parse_provider(index: int, entry: Any) -> OAuthProvider:
    """One entry of `network.email.oauth.providers`."""
    where = f"{SECTION}[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(where, "must be a mapping")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown option")
    preset_name = entry.get("preset")
    if preset_name is not None and preset_name not in PRESETS:
        raise ConfigError(f"{where}.preset", f"must be one of {', '.join(PRESETS)}")
    client_id = entry.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise ConfigError(f"{where}.client_id", "missing (the bridge's registration with the provider)")
    secret = entry.get("client_secret")
    if secret is not None and not isinstance(secret, str):
        raise ConfigError(f"{where}.client_secret", "must be a string or null")
    values: dict[str, Any] = {"client_id": client_id, "client_secret": secret or None}
    for key in ("id", "name", "authorize_url", "token_url", "paste_redirect_uri", "hint"):
        if key in entry:
            if not isinstance(entry[key], str) or not entry[key]:
                raise ConfigError(f"{where}.{key}", "must be a non-empty string")
            values[key] = entry[key]
    for key in ("scopes", "domains", "mx_suffixes"):
        if key in entry:
            values[key] = _strings(f"{where}.{key}", entry[key])
    for kind in ("imap", "smtp"):
        if kind in entry:
            try:
                values[kind] = parse_spec(kind, str(entry[kind]))
            except Exception as e:
                raise ConfigError(f"{where}.{kind}", getattr(e, "reason", str(e))) from None
    if preset_name is not None:
        return replace(PRESETS[preset_name], **values)
    missing = [k for k in ("id", "name", "authorize_url", "token_url", "scopes", "imap", "smtp")
               if k not in values]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}", "missing (no preset to take it from)")
    for key in ("authorize_url", "token_url"):
        if not values[key].startswith(("https://", "http://127.", "http://localhost")):
            raise ConfigError(f"{where}.{key}", "must be https:// (http only on loopback)")
    return OAuthProvider(**values)


def parse_providers(value: Any) -> tuple[OAuthProvider, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(SECTION, "must be a list")
    providers = tuple(parse_provider(i, e) for i, e in enumerate(value))
    ids = [p.id for p in providers]
    for pid in ids:
        if ids.count(pid) > 1:
            raise ConfigError(SECTION, f"the provider id {pid!r} appears twice")
    return providers
