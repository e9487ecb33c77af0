"""The two interfaces every connector implements, and the API the core offers them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .events import RemoteEvent
from .ids import MessageID, PortalID, UserLoginID
from .login import LoginProcess
from .matrix import MatrixMessage, PortalRef
from .metrics import GaugeReading
from .state import LoginStateEvent

if TYPE_CHECKING:
    from aiohttp import web
    from mautrix.util.async_db import Database, UpgradeTable


@dataclass(slots=True)
class LoginAPI:
    """The stored side of one login, as a client sees it."""

    login_id: UserLoginID
    user_mxid: str
    remote_name: str
    metadata: dict[str, Any]


class BridgeAPI(Protocol):
    """Services the core offers to connectors and their clients."""

    @property
    def connector_db(self) -> Database: ...

    def is_admin(self, user_mxid: str) -> bool:
        """Whether the Matrix user is a bridge admin (`bridge.permissions`)."""
        ...

    def encrypt_secret(self, plaintext: str) -> str: ...

    def public_url(self, path: str) -> str | None:
        """The browser-facing URL of `path` under `bridge.public_url`; None when none is set."""

    def add_public_route(
        self, method: str, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> None:
        """Serve `handler` at `public_url(path)`. No hs_token: the handler authenticates itself."""

    def decrypt_secret(self, token: str) -> str: ...

    async def queue_remote_event(self, login_id: UserLoginID, event: RemoteEvent) -> PortalID:
        """Queue an event for its portal; returns once it is handled (posted or recorded), with
        the portal it went to. The core owns where a message lives: a message posted before is
        not posted again, and its portal is returned, whatever portal the event proposed."""


    async def send_login_state(self, login_id: UserLoginID, state: LoginStateEvent) -> None: ...

    async def save_login_metadata(self, login_id: UserLoginID, metadata: dict[str, Any]) -> None: ...

    async def download_media(self, mxc: str, encrypted_file: dict[str, Any] | None = None) -> bytes:
        """A file of a Matrix event: `url`, or for an encrypted file its `file` object (the
        bytes come back decrypted and checked)."""

    async def matrix_display_name(self, mxid: str) -> str | None:
        """The Matrix user's display name (a default for the name the network shows)."""

    async def report_send_status(
        self, portal: PortalRef, event_id: str, *, delivered: bool, reason: str | None = None,
        retrying: bool = False,
    ) -> None:
        """Show the delivery state of a Matrix message the user sent."""

    async def notify_portal(
        self, login_id: UserLoginID, portal: PortalRef, text: str, *, reply_to_event: str | None = None
    ) -> None: ...


class NetworkClient(ABC):
    """One logged-in remote account (bridgev2's NetworkAPI)."""

    login: LoginAPI

    @abstractmethod
    async def connect(self) -> None:
        """Start receiving; report states through `BridgeAPI.send_login_state`."""

    @abstractmethod
    async def disconnect(self) -> None: ...

    async def logout(self) -> None:
        """Forget the remote session (called before the login is deleted)."""
        await self.disconnect()

    @abstractmethod
    async def handle_matrix_message(self, msg: MatrixMessage) -> MessageID | None:
        """Send a user's message to the network. Return its remote ID once it is safely queued."""


class NetworkConnector(ABC):
    """A network (bridgev2's NetworkConnector). One instance per bridge process."""

    #: short name: config section `network.<name>`, database version table, registry key
    name: str
    display_name: str
    #: the localpart prefix of ghosts is the core's; this is a human description of user IDs
    user_id_description: str = "an identifier"
    #: `login key=value` keys that hold secrets (such a message is scrubbed before it is stored
    #: and redacted at once); a connector adds the IDs of its own secret fields
    secret_login_fields: frozenset[str] = frozenset({"password", "secret", "token"})

    @abstractmethod
    def example_config(self) -> str:
        """The commented YAML of this connector's config section."""

    def validate_config(self, section: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Raise `ConfigError` for an invalid option (the core's config module)."""

    @property
    @abstractmethod
    def upgrade_table(self) -> UpgradeTable:
        """Numbered upgrade steps of this connector's own tables (separate version table)."""

    @abstractmethod
    async def start(self, bridge: BridgeAPI, config: dict[str, Any]) -> None: ...

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release process-wide resources."""

    @abstractmethod
    def create_login(self, user_mxid: str) -> LoginProcess: ...

    @abstractmethod
    async def load_login(self, login: LoginAPI) -> NetworkClient:
        """Build the client for a stored login (not yet connected)."""

    async def delete_login_data(self, login_id: UserLoginID) -> None:  # noqa: B027 - optional hook
        """Delete every row this connector keeps for a login that was logged out (its client,
        if any, is already disconnected): queued messages are cancelled, never sent."""

    async def prune(  # noqa: B027 - optional hook
        self, live_logins: Callable[[UserLoginID], bool], now_ms: int
    ) -> None:
        """Retention: delete rows of logins that no longer exist (`live_logins` says which do)
        and data past its retention period."""

    async def gauges(self) -> list[GaugeReading]:
        """This network's figures for the metrics listener (queue depths and the like)."""
        return []

    def cli_commands(self) -> dict[str, Callable[[list[str]], int]]:
        """Extra `python -m bridge <command>` entry points offered by this connector."""
        return {}
