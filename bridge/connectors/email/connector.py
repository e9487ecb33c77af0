"""The email NetworkConnector: config, database, login flow and per-login clients."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import logging
from typing import Any

from mautrix.util.async_db import UpgradeTable

from ...network import (
    BridgeAPI,
    GaugeReading,
    LoginAPI,
    LoginProcess,
    NetworkClient,
    NetworkConnector,
    UserLoginID,
)
from .client import EmailClient
from .config import EmailConfig, example_config, parse_config
from .db import LoginDataTable, OutboxTable, upgrade_table
from .db.outbox import OutboxState
from .discovery import Discovered, DnsResolver, discover
from .inbound.limits import ParseLimits
from .inbound.pool import close_default_pool
from .login import PASSWORD_FIELD, EmailLogin
from .oauth.authorize import CALLBACK_PATH, Authorizations
from .oauth.callback import CallbackPage
from .oauth.providers import PRESETS, OAuthProvider
from .password_page import PAGE_PATH, PasswordPages, PasswordRequest, origin_of

log = logging.getLogger("letterbox.email")


class EmailConnector(NetworkConnector):
    name = "email"
    display_name = "Email"
    user_id_description = "an email address"
    secret_login_fields = NetworkConnector.secret_login_fields | {PASSWORD_FIELD}

    def __init__(self) -> None:
        self._bridge: BridgeAPI | None = None
        self.config = EmailConfig.defaults()
        self.authorizations = Authorizations()
        self.password_pages = PasswordPages(None)
        self._imap_connect_limit: asyncio.Semaphore | None = None

    @property
    def imap_connect_limit(self) -> asyncio.Semaphore:
        """Shared by every mailbox: at most `imap.connect_concurrency` log in at once."""
        if self._imap_connect_limit is None:
            self._imap_connect_limit = asyncio.Semaphore(self.config.connect_concurrency)
        return self._imap_connect_limit

    @property
    def bridge(self) -> BridgeAPI:
        assert self._bridge is not None, "connector not started"
        return self._bridge

    def example_config(self) -> str:
        return example_config()

    def validate_config(self, section: dict[str, Any]) -> None:
        parse_config(section)

    @property
    def upgrade_table(self) -> UpgradeTable:
        return upgrade_table

    @property
    def parse_limits(self) -> ParseLimits:
        c = self.config
        return ParseLimits(max_bytes=c.max_message_bytes, max_mime_depth=c.max_mime_depth,
                           max_parts=c.max_parts, max_header_bytes=c.max_header_bytes,
                           time_budget_s=c.parse_time_budget)

    async def start(self, bridge: BridgeAPI, config: dict[str, Any]) -> None:
        self._bridge = bridge
        self.config = parse_config(config)
        self._imap_connect_limit = None
        bridge.add_public_route("GET", CALLBACK_PATH, CallbackPage(self.authorizations).handle)
        self.password_pages = PasswordPages(origin_of(bridge.public_url("")))
        bridge.add_public_route("GET", PAGE_PATH, self.password_pages.show)
        bridge.add_public_route("POST", PAGE_PATH, self.password_pages.receive)

    async def stop(self) -> None:
        await close_default_pool()  # the mail parser's worker processes

    # ---------------------------------------------------------------- OAuth
    def oauth_provider_for(self, domain: str) -> OAuthProvider | None:
        return next((p for p in self.config.oauth_providers if p.serves(domain)), None)

    def oauth_provider(self, provider_id: str) -> OAuthProvider | None:
        return next((p for p in self.config.oauth_providers if p.id == provider_id), None)

    async def discover(self, address: str, user_mxid: str) -> Discovered:
        """Server settings found for `address` (only a known provider's when discovery is off);
        the lookups of a user who is not an admin reach only the servers that user may name."""
        cfg = self.config
        configured = {p.id for p in cfg.oauth_providers}
        known = cfg.oauth_providers + tuple(p for p in PRESETS.values() if p.id not in configured)
        domain = address.rpartition("@")[2].lower()
        provider = next((p for p in known if p.serves(domain)), None)
        if provider is not None:  # a big provider's own domain: no lookup needed
            return Discovered(provider.imap, provider.smtp, f"{provider.name} hosts {domain}",
                              provider)
        if not cfg.discovery:
            return Discovered()
        allowed = None if self.bridge.is_admin(user_mxid) else cfg.server_policy.address_allowed
        return await discover(address, DnsResolver(cfg.nameserver, cfg.discovery_timeout),
                              known, ca_file=cfg.ca_file, timeout=cfg.discovery_timeout,
                              allowed=allowed)

    def password_page_url(self, request: PasswordRequest) -> str | None:
        return self.bridge.public_url(f"{PAGE_PATH}?t={request.token}")

    def oauth_callback_url(self) -> str | None:
        return self.bridge.public_url(CALLBACK_PATH)

    def oauth_redirect_uri(self, provider: OAuthProvider) -> str:
        return self.oauth_callback_url() or provider.paste_redirect_uri

    def create_login(self, user_mxid: str) -> LoginProcess:
        return EmailLogin(self, user_mxid)

    def make_client(self, login: LoginAPI) -> EmailClient:
        return EmailClient(self, login)

    async def load_login(self, login: LoginAPI) -> NetworkClient:
        return self.make_client(login)

    async def delete_login_data(self, login_id: UserLoginID) -> None:
        deleted = await LoginDataTable(self.bridge.connector_db).delete_login(login_id)
        log.info("Deleted %d stored rows (queue, index, sync state) of login %s", deleted, login_id)

    async def prune(self, live_logins: Callable[[UserLoginID], bool], now_ms: int) -> None:
        table = LoginDataTable(self.bridge.connector_db)
        orphans = await table.delete_orphans(lambda login_id: live_logins(UserLoginID(login_id)))
        keep_ms = int(self.config.keep_sent_days * 86_400_000)
        finished = await table.prune_finished_outbox(now_ms - keep_ms)
        if orphans or finished:
            log.info("Retention: deleted %d rows of logged-out logins and %d sent or failed mails",
                     orphans, finished)

    async def gauges(self) -> list[GaugeReading]:
        depth = await OutboxTable(self.bridge.connector_db).depth()
        readings = [GaugeReading("outbox_mails", "Outgoing mails kept, by state", float(sum(
            n for (state, _), n in depth.items() if state == s.value)), {"state": s.value})
            for s in OutboxState]
        readings.append(GaugeReading("sent_copies_pending", "Sent mails whose copy in the Sent "
                                     "folder is still owed", float(sum(
                                         n for (state, owed), n in depth.items()
                                         if owed and state == OutboxState.SENT.value))))
        return readings

    def cli_commands(self) -> dict[str, Callable[[list[str]], int]]:
        return {"preview": _preview_command}


def _preview_command(argv: list[str]) -> int:
    from .inbound.preview import main

    return main(argv)


