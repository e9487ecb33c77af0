"""Set-up shared by the bridge's end-to-end tests: config, registration, a running bridge."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import shutil
from typing import Any

from bridge.__main__ import double_puppet_registration_path, generate, load_config
from bridge.connectors import load_connector
from bridge.core.bridge import Bridge
from bridge.core.config import Config
from bridge.network import NetworkConnector
from devstack.ports import free_port

LOOPBACK = "tests.helpers.loopback_connector:LoopbackConnector"
# The loopback bridge is a second appservice on the same homeserver: its own namespaces.
LOOPBACK_APPSERVICE = {
    "appservice.id": "loopback",
    "appservice.bot_username": "loopbackbot",
    "appservice.username_template": "loop_{userid}",
    "appservice.alias_template": "loop_{alias}",
}

#: An email bridge against the rig's mail servers: they are on loopback (a private address the
#: bridge refuses by default), and their domain is in no DNS (no discovery). Tests, benchmarks
#: and the soak all start from these.
EMAIL_RIG_OVERRIDES: dict[str, Any] = {
    "network.email.discovery.enabled": False,
    "network.email.allowed_private_servers": ["127.0.0.0/8"],
}


@dataclass(slots=True)
class BridgeSetup:
    """One generated config + registration per session; each test gets a copy with its database."""

    workdir: Path
    template: Path
    registration: Path
    connector: str
    as_port: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: The double-puppeting registration (its token is in the config; off unless a test turns
    #: `double_puppet.enabled` on).
    double_puppet_registration: Path | None = None

    @classmethod
    def generate(cls, workdir: Path, connector: str, *, permissions: dict[str, str],
                 overrides: dict[str, Any] | None = None) -> BridgeSetup:
        workdir.mkdir(parents=True, exist_ok=True)
        template, registration = workdir / "config.yaml", workdir / "registration.yaml"

        class Args:
            config = template
            registration = workdir / "registration.yaml"
        Args.connector = connector  # type: ignore[attr-defined]
        generate(Args, load_connector(connector))  # type: ignore[arg-type]
        port = free_port()
        config = _load_raw(template, connector)
        config["homeserver.domain"] = "localhost"
        config["appservice.port"] = port
        config["appservice.address"] = f"http://127.0.0.1:{port}"
        config["bridge.permissions"] = permissions
        # Plaintext rooms unless a test asks for encryption (config_for(core=ENCRYPTED)): the
        # bot still has its device, so encrypted rooms users create are read and answered.
        config["encryption.default"] = False
        for key, value in (overrides or {}).items():
            config[key] = value
        config["double_puppet.enabled"] = True
        config.save()
        # The registration must carry the final URL: write it again from the edited config
        # (with double puppeting on, so its registration is written too; then off again).
        Args.config = template
        generate(Args, load_connector(connector))  # type: ignore[arg-type]
        config = _load_raw(template, connector)
        config["double_puppet.enabled"] = False
        config.save()
        return cls(workdir, template, registration, connector, port,
                   double_puppet_registration=double_puppet_registration_path(registration))

    @property
    def public_url(self) -> str:
        """`bridge.public_url` as if a reverse proxy forwarded it to the bridge's listener."""
        return f"http://127.0.0.1:{self.as_port}/public"

    def config_for(self, name: str, *, hs_url: str, db_url: str, network: dict[str, Any] | None = None,
                   core: dict[str, Any] | None = None) -> Path:
        path = self.workdir / f"{name}.yaml"
        shutil.copy(self.template, path)
        config = _load_raw(path, self.connector)
        config["homeserver.address"] = hs_url
        config["database.url"] = db_url
        connector = load_connector(self.connector)
        for key, value in (network or {}).items():
            config[f"network.{connector.name}.{key}"] = value
        for key, value in (core or {}).items():
            config[key] = value
        config.save()
        return path


def _load_raw(path: Path, connector: str) -> Config:
    from bridge.__main__ import example_for

    return Config.load(path, example_for(load_connector(connector)))


#: Bridges started by this test and not yet handed to `stop_leftover_bridges`: a test that fails
#: between starting a bridge and stopping it must not leave the appservice port taken for every
#: test after it.
_RUNNING: list[Bridge] = []


async def start_bridge(config_path: Path, connector: NetworkConnector | None = None,
                       connector_name: str = LOOPBACK) -> Bridge:
    connector = connector or load_connector(connector_name)
    config = load_config(config_path, connector)
    bridge = Bridge(config, connector)
    try:
        await bridge.start()
    except BaseException:
        # Release what did start (an open SQLite connection thread keeps pytest from exiting).
        await bridge.stop()
        raise
    _RUNNING.append(bridge)
    return bridge


async def stop_leftover_bridges() -> None:
    """Stop every bridge a test started (`Bridge.stop` does nothing for one already stopped)."""
    while _RUNNING:
        await _RUNNING.pop().stop()
