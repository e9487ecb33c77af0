"""Synapse (from .cache/synapse-venv, SQLite): config files and the HTTP APIs devstack needs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
import hashlib
import hmac
import json
import os
from pathlib import Path
import secrets
from typing import Any
import urllib.error
import urllib.request

from .errors import MatrixAdminError, MissingBinaryError
from .ports import LOOPBACK

REPO = Path(__file__).resolve().parent.parent
SYNAPSE_PYTHON = REPO / ".cache" / "synapse-venv" / "bin" / "python"
DEFAULT_SERVER_NAME = "localhost"


def require_synapse() -> Path:
    """The Synapse venv's python, or MissingBinaryError."""
    site = list((SYNAPSE_PYTHON.parent.parent / "lib").glob("python3*/site-packages/synapse"))
    if not os.access(SYNAPSE_PYTHON, os.X_OK) or not site:
        raise MissingBinaryError(f"Synapse ({SYNAPSE_PYTHON.parent.parent})")
    return SYNAPSE_PYTHON


@dataclass(frozen=True)
class SynapseSecrets:
    """Secrets kept in `<dir>/secrets.json` so a restarted homeserver keeps its users' tokens."""

    registration_shared_secret: str
    macaroon_secret_key: str
    form_secret: str

    @classmethod
    def load_or_create(cls, path: Path) -> SynapseSecrets:
        if path.is_file():
            return cls(**json.loads(path.read_text()))
        new = cls(*(secrets.token_hex(32) for _ in range(3)))
        path.touch(mode=0o600)
        path.write_text(json.dumps(asdict(new)))
        return new


_RATE = "{per_second: 10000, burst_count: 100000}"


def homeserver_yaml(
    directory: Path,
    port: int,
    server_name: str,
    registrations: list[Path],
    secret: SynapseSecrets,
    max_upload_size: str = "50M",
) -> str:
    """The homeserver.yaml text: client listener only, no federation, rate limits lifted."""
    regs = "".join(f"\n  - {json.dumps(str(p))}" for p in registrations) or " []"
    rate_limits = "\n".join(
        f"{key}: {_RATE}"
        for key in (
            "rc_message",
            "rc_registration",
            "rc_joins_per_room",
            "rc_3pid_validation",
            "rc_admin_redaction",
            "rc_room_creation",
            "rc_media_create",
            "rc_delayed_event_mgmt",
            "rc_reports",
            "rc_profile",
        )
    )
    return f"""\
# Written by devstack.
server_name: {json.dumps(server_name)}
public_baseurl: "http://{LOOPBACK}:{port}/"
listeners:
  - port: {port}
    bind_addresses: ['{LOOPBACK}']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client, openid]
        compress: false
database:
  name: sqlite3
  args:
    database: {json.dumps(str(directory / "homeserver.db"))}
log_config: {json.dumps(str(directory / "log.config"))}
media_store_path: {json.dumps(str(directory / "media_store"))}
max_upload_size: {json.dumps(max_upload_size)}
signing_key_path: {json.dumps(str(directory / f"{server_name}.signing.key"))}
report_stats: false
enable_metrics: false
registration_shared_secret: {json.dumps(secret.registration_shared_secret)}
macaroon_secret_key: {json.dumps(secret.macaroon_secret_key)}
form_secret: {json.dumps(secret.form_secret)}
enable_registration: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
presence:
  enabled: false
url_preview_enabled: false
app_service_config_files:{regs}
experimental_features:
  msc2409_to_device_messages_enabled: true
  msc3202_transaction_extensions: true
{rate_limits}
rc_login:
  address: {_RATE}
  account: {_RATE}
  failed_attempts: {_RATE}
rc_joins:
  local: {_RATE}
  remote: {_RATE}
rc_invites:
  per_room: {_RATE}
  per_user: {_RATE}
  per_issuer: {_RATE}
rc_presence:
  per_user: {_RATE}
"""


def log_config_yaml(log_file: Path, level: str = "INFO") -> str:
    return f"""\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {json.dumps(str(log_file))}
    encoding: utf8
loggers:
  synapse.storage.SQL:
    level: WARNING
root:
  level: {level}
  handlers: [file]
disable_existing_loggers: false
"""


# ---------------------------------------------------------------- HTTP
def http_json(
    method: str, url: str, body: dict[str, Any] | None = None, *, timeout: float = 30
) -> dict[str, Any]:
    """One JSON request; MatrixAdminError on an HTTP error status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            result: dict[str, Any] = json.loads(resp.read() or b"{}")
            return result
    except urllib.error.HTTPError as exc:
        with exc:
            raw = exc.read()
        try:
            err = json.loads(raw)
        except ValueError:
            err = {"error": raw.decode(errors="replace")}
        raise MatrixAdminError(exc.code, err.get("errcode", ""), err.get("error", "")) from None


def versions_answer(hs_url: str) -> bool:
    """Does the homeserver answer /_matrix/client/versions?"""
    try:
        return "versions" in http_json("GET", f"{hs_url}/_matrix/client/versions", timeout=2)
    except (OSError, MatrixAdminError, ValueError):
        return False


def register_user(
    hs_url: str, shared_secret: str, name: str, password: str, admin: bool = False
) -> tuple[str, str]:
    """Create a user via the shared-secret admin API; returns (user_id, access_token)."""
    url = f"{hs_url}/_synapse/admin/v1/register"
    nonce = http_json("GET", url)["nonce"]
    message = "\x00".join([nonce, name, password, "admin" if admin else "notadmin"])
    mac = hmac.new(shared_secret.encode(), message.encode(), hashlib.sha1)
    res = http_json(
        "POST",
        url,
        {
            "nonce": nonce,
            "username": name,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        },
    )
    return res["user_id"], res["access_token"]


def login(hs_url: str, name: str, password: str) -> tuple[str, str]:
    """Password login; returns (user_id, access_token)."""
    res = http_json(
        "POST",
        f"{hs_url}/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": name},
            "password": password,
        },
    )
    return res["user_id"], res["access_token"]
