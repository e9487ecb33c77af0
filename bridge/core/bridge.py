"""The bridge process: database, appservice API, intake, users, logins and portals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import logging
import secrets
import ssl
import time
from typing import Any, cast

from aiohttp import ClientSession, TCPConnector, web
from mautrix.api import Method, Path
from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError
from mautrix.types import (
    JSON,
    ContentURI,
    EventType,
    PowerLevelStateEventContent,
    RoomCreatePreset,
    RoomID,
    UserID,
)
from mautrix.util.async_db import Database
from yarl import URL

from .. import __version__
from ..db import (
    GhostTable,
    InboxEvent,
    InboxTable,
    LeaseTable,
    ManagementRoomTable,
    MessageTable,
    PendingPartTable,
    PortalRow,
    PortalTable,
    RetiredPortalRow,
    RetiredPortalTable,
    UserLoginRow,
    UserLoginTable,
    UserRow,
    UserTable,
    upgrade_table,
)
from ..network import (
    CompletedLogin,
    ConnectorError,
    LoginState,
    LoginStateEvent,
    NetworkConnector,
    NetworkUserID,
    PortalID,
    PortalRef,
    RemoteEvent,
    RemoteMessage,
    StartChatHandler,
    UserLoginID,
)
from ..network.errors import ConfigError
from .appservice_api import BridgeAppServiceAPI
from .avatar import bot_avatar
from .config import Config
from .encrypted_events import EncryptedEventGate
from .encryption import CryptoExtras, Encryption, EncryptionUnavailable
from .files import private_sqlite
from .ghost import Ghosts
from .intake import Intake
from .metrics import Metrics, MetricsServer
from .permissions import Level, level_for
from .portal import Portal
from .processor import InboxProcessor
from .public_web import PublicHandler, PublicWeb
from .secret_input import SecretInput
from .secrets import SecretBox, SecretError
from .sending import send_event
from .startup import check_homeserver, listen, open_database, redacted_url
from .state_store import StateStore
from .upload_limit import UploadLimit
from .user import User
from .user_login import STATE_TEXT, UserLogin
from .workers import Workers, default_worker_id

log = logging.getLogger("letterbox.bridge")

RETENTION_INTERVAL_S = 3600
#: With several workers, how often a worker that did not receive a transaction reads the inbox.
WORKER_INBOX_POLL_S = 0.5
#: How long a worker waits for a login's client to disconnect when it gives the login up.
DISCONNECT_TIMEOUT_S = 5.0


def user_reason(error: Exception) -> str:
    """What a user may read about an error: a connector's user-facing reason, never the text of
    an unexpected exception (it can name internal hosts, URLs or files; the log has it)."""
    if isinstance(error, ConnectorError):
        return error.reason
    return "an internal error (the bridge admin can find it in the log)"


@dataclass(frozen=True, slots=True)
class OpenedChat:
    portal: Portal | None
    user_id: NetworkUserID
    name: str | None
    created: bool


class Bridge:
    """Implements the connector-facing `BridgeAPI` and owns all core state."""

    def __init__(self, config: Config, connector: NetworkConnector) -> None:
        self.config = config
        self.connector = connector
        self.domain: str = config["homeserver.domain"]
        url = str(config["database.url"])
        db_args: dict[str, Any] = {}
        if url.startswith("sqlite:"):
            try:
                private_sqlite(URL(url).path)
            except OSError as e:
                raise ConfigError("database.url", f"cannot open {url} ({e.strerror}); check the "
                                  "path (its directory must exist)") from None
            # Deleted rows (handled events, sent mail) are overwritten, not left in free pages.
            db_args = {"init_commands": ["PRAGMA secure_delete = ON"]}
        connector_db_args: dict[str, Any] = {}
        if url.startswith("postgres"):
            # mautrix exits the process on an asyncpg internal client error, which a connection
            # cut by a database restart can cause; the bridge answers 503 and reconnects instead.
            db_args = {"min_size": 1, "max_size": int(config.get("database.max_connections", 10)),
                       "meow_exit_on_ice": False}
            connector_db_args = {"meow_exit_on_ice": False}
        self.db = Database.create(url, upgrade_table=upgrade_table, db_args=db_args,
                                  log=logging.getLogger("letterbox.db"))
        self._connector_db = Database.create(url, upgrade_table=connector.upgrade_table,
                                             db_args=connector_db_args,
                                             log=logging.getLogger(f"letterbox.db.{connector.name}"))
        self.users_table = UserTable(self.db)
        self.logins_table = UserLoginTable(self.db)
        self.portals_table = PortalTable(self.db)
        self.messages = MessageTable(self.db)
        self.pending_parts = PendingPartTable(self.db)
        self.inbox = InboxTable(self.db)
        self.management_rooms = ManagementRoomTable(self.db)
        self.retired_portals = RetiredPortalTable(self.db)
        self.secret_box = SecretBox.from_config(
            str(config["bridge.secrets.key_id"]), str(config["bridge.secrets.key"]),
            dict(config.get("bridge.secrets.old_keys", {}) or {}),
        )
        self.txn_key = self.secret_box.derive_key("letterbox message part transaction IDs")
        self.permissions: dict[str, str] = dict(config["bridge.permissions"])
        self.bot_mxid = UserID(f"@{config['appservice.bot_username']}:{self.domain}")
        self._session: ClientSession | None = None
        self.az: BridgeAppServiceAPI | None = None
        self._bot: IntentAPI | None = None
        self.ghosts: Ghosts
        self.users: dict[str, User] = {}
        self.logins: dict[UserLoginID, UserLogin] = {}
        self.portals: dict[tuple[str, str], Portal] = {}
        self._portal_lock = asyncio.Lock()
        self.processor = InboxProcessor(self.inbox, self._handle_matrix_event, give_up=self._matrix_event_given_up)
        #: Several worker processes on one PostgreSQL database (`workers.enabled`); None: this
        #: process serves every login.
        self.workers: Workers | None = None
        if config.get("workers.enabled", False):
            self.workers = Workers(
                LeaseTable(self.db), str(config["workers.id"] or default_worker_id()),
                float(config["workers.lease_seconds"]), gain=self._gain_users,
                lose=self._lose_users)
            self.processor = InboxProcessor(
                self.inbox, self._handle_matrix_event, give_up=self._matrix_event_given_up,
                retry_interval=WORKER_INBOX_POLL_S, fetch=self._owned_events)
        self.secret_input = SecretInput(
            self._expects_secret, connector.secret_login_fields,
            sealer=self.secret_box if config.get("workers.enabled", False) else None)
        self.public_web = PublicWeb(config.get("bridge.public_url", None) or None)
        self.intake = Intake(str(config["appservice.hs_token"]), self.inbox, self.processor.wake,
                             scrub=self.secret_input.scrub, public=self.public_web)
        self.encryption: Encryption | None = None
        if config["encryption.allow"]:
            self.encryption = Encryption(
                database_url=url, db_args=connector_db_args, bot_mxid=self.bot_mxid,
                homeserver=str(config["homeserver.address"]),
                as_token=str(config["appservice.as_token"]),
                secrets_key=str(config["bridge.secrets.key"]),
                msc4190=bool(config["encryption.msc4190"]),
                allow_key_sharing=bool(config["encryption.allow_key_sharing"]),
                decrypt_timeout=float(config["encryption.decrypt_timeout"]),
                rotation_period_ms=int(config["encryption.rotation.period_ms"]),
                rotation_messages=int(config["encryption.rotation.messages"]),
                bot=lambda: self.bot, is_bridge_puppet=self.is_bridge_puppet,
                shared_rooms=self._rooms_shared_with,
            )
            self.intake.extras_expected = True  # until encryption has started (or given up)
        self.encrypt_new_rooms = bool(config["encryption.allow"] and config["encryption.default"])
        self._runner: web.AppRunner | None = None
        self._provisioning_runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.metrics = Metrics()
        self.started = False
        self._stopped = False
        #: The bot's avatar (`appservice.bot_avatar`), also the spaces'; None for none.
        self.avatar: ContentURI | None = None
        self.creators_listed_in_power_levels = True
        self._tasks: set[asyncio.Task[Any]] = set()
        from .matrix_handler import MatrixHandler  # late: it needs the Bridge type only

        self.matrix = MatrixHandler(self)
        # Encrypted events are decrypted (or answered) before the handler sees them.
        self.gate = EncryptedEventGate(None, lambda: self.bot, self.is_bridge_puppet,
                                       self.matrix.handle, scrub=self.secret_input.scrub)
        self.version = __version__

    # ---------------------------------------------------------------- lifecycle
    @property
    def bot(self) -> IntentAPI:
        assert self._bot is not None, "bridge not started"
        return self._bot

    @property
    def http(self) -> ClientSession:
        """The bridge's HTTP client session (homeserver requests, trusting `homeserver.ca_file`)."""
        assert self._session is not None, "bridge not started"
        return self._session

    @property
    def connector_db(self) -> Database:
        return self._connector_db

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._release()  # a failed start must not keep the port or the database
            raise

    async def _start(self) -> None:
        url = str(self.config["database.url"])
        log.info("Database %s; homeserver %s (%s)", redacted_url(url),
                 self.config["homeserver.address"], self.domain)
        await open_database(self.db, url)
        self._connector_db.override_pool(self.db)  # the connector's tables share the core's pool
        await self._connector_db.start()
        ca_file = self.config.get("homeserver.ca_file", None)
        ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        self._session = ClientSession(connector=TCPConnector(ssl=ctx))
        self.az = BridgeAppServiceAPI(
            base_url=self.config["homeserver.address"],
            bot_mxid=self.bot_mxid,
            token=self.config["appservice.as_token"],
            log=logging.getLogger("letterbox.as"),  # type: ignore[arg-type]
            state_store=StateStore(),
            client_session=self._session,
            bridge_name=self.connector.name,
        )
        self._bot = self.az.bot_intent()
        self.upload_limit = UploadLimit(self._bot.api)
        self.ghosts = Ghosts(self.az, GhostTable(self.db), self.config["appservice.username_template"],
                             self.domain)
        self._runner = web.AppRunner(self.intake.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config["appservice.hostname"], self.config["appservice.port"])
        await listen(site, self.config["appservice.hostname"], self.config["appservice.port"])
        log.info("Appservice API listening on %s:%s", self.config["appservice.hostname"],
                 self.config["appservice.port"])
        await self._init_bot()
        await self._start_provisioning()
        await self._start_metrics()
        await self._start_encryption()
        await self.connector.start(self, dict(self.config[f"network.{self.connector.name}"]))
        if self.workers is None:
            for row in await self.logins_table.all():
                await self._reseal(row)
                await self._load_login(row, connect=True)
        else:
            log.info("Worker %s: lease %s s; logins are shared with the other workers",
                     self.workers.id, self.workers.lease_seconds)
            self.workers.start()
        self.processor.start()
        self.spawn(self._retention_loop(), "retention")
        self.started = True
        if self.encryption is not None:
            self._tasks.add(self.encryption.probe_delivery(self._probe_result))

    async def _start_encryption(self) -> None:
        enc = self.encryption
        if enc is None:
            log.info("Encryption is turned off (encryption.allow); encrypted rooms get a notice")
            return
        assert self._session is not None and self.az is not None
        try:
            await enc.start(self.db, self._session)
        except EncryptionUnavailable as e:
            log.error("Encryption is unavailable, running without it: %s", e)
            self.intake.drop_extras()
            self.encryption = None
            self.encrypt_new_rooms = False
            return
        self.az.set_encryption(enc)
        self.gate.encryption = enc

        async def extras(body: dict[str, Any]) -> None:
            await enc.handle_transaction(CryptoExtras.from_transaction(body))

        await self.intake.set_extras_handler(extras)

    def _probe_result(self, problem: str | None) -> None:
        if problem:
            log.error("Encryption will not work: %s", problem)
        else:
            log.info("The homeserver delivers to-device events and key counts to the bridge")

    async def _rooms_shared_with(self, user_id: UserID) -> list[RoomID]:
        """The bridge's rooms `user_id` is in: their management room and their portals."""
        rooms = [RoomID(r) for r in await self.management_rooms.for_user(user_id)]
        for login in self.logins_of(user_id):
            rows = await self.portals_table.for_receiver(login.id)
            rooms += [RoomID(r.mxid) for r in rows if r.mxid]
        return rooms

    def encryption_state(self) -> list[dict[str, Any]]:
        """Initial state for a room the bridge creates: `m.room.encryption` when configured."""
        if not self.encrypt_new_rooms or self.encryption is None:
            return []
        return [{"type": "m.room.encryption", "state_key": "",
                 "content": self.encryption.rotation.serialize()}]

    def room_created(self, room_id: RoomID, initial_state: list[dict[str, Any]]) -> None:
        if self.encryption is None:
            return
        content = next((e["content"] for e in initial_state if e["type"] == "m.room.encryption"),
                       None)
        self.encryption.rooms.remember(room_id, content)

    async def _retention_loop(self) -> None:
        while True:
            if self.workers is not None:
                await self.workers.coordinating.wait()  # one worker prunes: the coordinator
            try:
                await self.prune()
            except Exception:
                log.exception("Retention pass failed; trying again in an hour")
            await asyncio.sleep(RETENTION_INTERVAL_S)

    async def prune(self, now_ms: int | None = None) -> None:
        """Delete what is kept only for a while: handled event IDs, and the connector's data of
        logged-out logins and past its own retention period."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        keep_ms = int(float(self.config["bridge.retention.event_ids_days"]) * 86_400_000)
        events = await self.inbox.prune(now_ms - keep_ms)
        if events:
            log.info("Retention: forgot %d handled event IDs", events)
        if self.workers is None:
            await self.connector.prune(lambda login_id: login_id in self.logins, now_ms)
            return
        known = {row.id for row in await self.logins_table.all()}  # other workers' logins too
        await self.connector.prune(lambda login_id: login_id in known, now_ms)
    async def _start_metrics(self) -> None:
        if not self.config["metrics.enabled"]:
            return
        server = MetricsServer(self, self.metrics)
        self._metrics_runner = web.AppRunner(server.app, access_log=None)
        await self._metrics_runner.setup()
        host, port = self.config["metrics.hostname"], self.config["metrics.port"]
        await listen(web.TCPSite(self._metrics_runner, host, port), host, port, "metrics")
        log.info("Metrics and health checks on %s:%s", host, port)

    async def _start_provisioning(self) -> None:
        if not self.config["provisioning.enabled"]:
            return
        from .provisioning import Provisioning  # late: it needs the Bridge type only

        api = Provisioning(self, str(self.config["provisioning.shared_secret"]))
        self._provisioning_runner = web.AppRunner(api.app, access_log=None)
        await self._provisioning_runner.setup()
        host, port = self.config["provisioning.hostname"], self.config["provisioning.port"]
        await listen(web.TCPSite(self._provisioning_runner, host, port), host, port, "provisioning")
        log.info("Provisioning API listening on %s:%s", host, port)

    async def _init_bot(self) -> None:
        assert self.az is not None
        probe = self.az.intent(self.ghosts.mxid("letterbox-namespace-check"))
        await check_homeserver(self.config, self.bot, probe, lambda: self.intake.refused)
        await self.bot.set_displayname(self.config.get("appservice.bot_displayname", "Letterbox"))
        self.avatar = await bot_avatar(self.bot, str(self.config["appservice.bot_avatar"] or ""))
        if self.avatar is not None:
            await self.bot.set_avatar_url(self.avatar)  # checks the current one first
        caps = await self.bot.api.request(Method.GET, Path.v3.capabilities)
        version = str(caps.get("capabilities", {}).get("m.room_versions", {}).get("default", "10"))
        # From room version 12 on, creators hold power implicitly and may not be listed.
        self.creators_listed_in_power_levels = not (version.isdigit() and int(version) >= 12)

    async def stop(self) -> None:
        """Shut down; a second call (a signal handler and a `finally`) does nothing."""
        if self._stopped:
            return
        self._stopped = True
        self.started = False
        try:
            if self.workers is not None:
                await self.workers.stop()  # takes and gives up nothing from here on
            await self.processor.stop()
            for login in list(self.logins.values()):
                if login.client:
                    try:
                        await login.client.disconnect()
                    except Exception:
                        log.exception("Error disconnecting %s", login.id)
            for portal in self.portals.values():
                await portal.stop()
            await self.connector.stop()
            if self.encryption is not None:
                await self.encryption.stop()
            if self.workers is not None:
                await self.workers.leave()  # the others take its users over at once
        finally:
            # Whatever failed above, the listeners, the HTTP session and the database are let go
            # (a port left bound would stop the next start).
            await self._release()

    async def _release(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        if self._provisioning_runner:
            await self._provisioning_runner.cleanup()
            self._provisioning_runner = None
        if self._metrics_runner:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        if self._session:
            await self._session.close()
            self._session = None
        await self.db.stop()

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception():
            log.error("Background task %s failed", task.get_name(), exc_info=task.exception())

    async def _handle_matrix_event(self, event: dict[str, Any]) -> None:
        started = time.monotonic()
        await self.gate.handle(event)
        self.metrics.observe_matrix(str(event.get("type", "")), started)

    # ---------------------------------------------------------------- several workers
    async def _owned_events(self, limit: int) -> list[InboxEvent]:
        """The inbox events of the rooms this worker holds."""
        assert self.workers is not None
        events = await self.inbox.pending_owned(self.workers.id, limit)
        return [e for e in events if self.workers.serves(e.owner)]

    async def _gain_users(self, subjects: set[str]) -> None:
        """This worker now holds these users: their logins are loaded and connected."""
        for mxid in sorted(subjects):
            for row in await self.logins_table.for_user(mxid):
                if row.id not in self.logins:
                    await self._reseal(row)
                    await self._load_login(row, connect=True)
        self.processor.wake()

    async def _lose_users(self, subjects: set[str]) -> None:
        """Stop acting for these users: their rooms' events, clients and portals stop."""
        assert self.workers is not None
        dropped = await self.processor.release(subjects)
        try:
            await self.inbox.unclaim(self.workers.id, dropped)
        except Exception:  # they are free for others anyway once this worker's leases expire
            log.warning("Could not give back %d unhandled event(s)", len(dropped), exc_info=True)
        logins = [lg for lg in self.logins.values() if lg.row.user_mxid in subjects]
        for login in logins:
            self.logins.pop(login.id, None)
            for key in [k for k in self.portals if k[1] == login.id]:
                await self.portals.pop(key).stop()

        async def disconnect(login: UserLogin) -> None:
            if login.client is None:
                return
            try:
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                    await login.client.disconnect()
            except Exception:
                log.exception("Error disconnecting %s", login.id)

        await asyncio.gather(*(disconnect(lg) for lg in logins))
        for mxid in subjects:
            self.users.pop(mxid, None)

    async def readiness_problem(self) -> str | None:
        """Why the bridge cannot do its work now (None: ready)."""
        if not self.started:
            return "starting"
        try:
            await self.db.fetchval("SELECT 1")
        except Exception as e:
            return f"database: {type(e).__name__}"
        return None

    async def _matrix_event_given_up(self, event: dict[str, Any], exc: BaseException) -> None:
        """A user's message that failed every attempt: its sender sees that, not silence."""
        if event.get("type") not in ("m.room.message", "m.sticker", "m.room.encrypted") or self.is_bridge_puppet(
                str(event.get("sender", ""))) or not event.get("room_id") or not event.get("event_id"):
            return
        await self.send_status(RoomID(event["room_id"]), event["event_id"], delivered=False, reason=(
            f"the bridge failed on it ({type(exc).__name__}); the error is in the bridge's log."))

    # ---------------------------------------------------------------- users and logins
    def _expects_secret(self, room_id: str, sender: str) -> bool:
        """Whether `sender`'s next message in `room_id` may answer a secret prompt."""
        user = self.users.get(sender)
        return bool(user and user.login_flow and user.login_flow.room_id == room_id
                    and user.login_flow.wants_secret())

    async def double_puppet(self, mxid: str) -> IntentAPI | None:
        """An intent acting as the real Matrix user `mxid` (double puppeting), or None when it
        is off or the user lives on another homeserver."""
        if not self.config["double_puppet.enabled"] or not mxid.endswith(f":{self.domain}"):
            return None
        assert self.az is not None
        await self.az.state_store.registered(UserID(mxid))  # a real user: never /register
        return self.az.intent(UserID(mxid), token=str(self.config["double_puppet.as_token"]),
                              real_user_as_token=True)

    def is_bridge_puppet(self, mxid: str) -> bool:
        return mxid == self.bot_mxid or self.ghosts.network_id(mxid) is not None

    async def get_user(self, mxid: str) -> User:
        user = self.users.get(mxid)
        if user is None:
            row = await self.users_table.get(mxid)
            user = User(mxid=mxid, level=level_for(mxid, self.permissions),
                        management_room=row.management_room if row else None)
            self.users[mxid] = user
        return user

    async def set_management_room(self, user: User, room_id: str | None) -> None:
        """The room notices go to (the most recent private chat with the bot)."""
        user.management_room = room_id
        await self.users_table.upsert(UserRow(user.mxid, room_id))

    async def add_management_room(self, user: User, room_id: str) -> None:
        """A private chat with the bot: commands work there without a prefix."""
        await self.management_rooms.add(room_id, user.mxid, int(time.time() * 1000))
        await self.set_management_room(user, room_id)

    async def management_owner(self, room_id: str) -> str | None:
        return await self.management_rooms.owner(room_id)

    async def forget_management_room(self, user: User, room_id: str) -> None:
        """The user left one of their chats with the bot; notices go to another one, if any."""
        await self.management_rooms.remove(room_id)
        if user.management_room == room_id:
            remaining = await self.management_rooms.for_user(user.mxid)
            await self.set_management_room(user, remaining[0] if remaining else None)

    async def ensure_management_room(self, user: User) -> str:
        if user.management_room:
            return user.management_room
        room_id = await self.create_management_room(user)
        return room_id

    async def create_management_room(self, user: User) -> str:
        """A private chat the bot created (and so controls: it can remove secrets there)."""
        state = self.encryption_state()
        room_id = await self.bot.create_room(
            name=self.config.get("appservice.bot_displayname", "Letterbox"),
            is_direct=True, invitees=[UserID(user.mxid)], preset=RoomCreatePreset.TRUSTED_PRIVATE,
            initial_state=state,
        )
        self.room_created(room_id, state)
        await self.add_management_room(user, room_id)
        return room_id

    async def bot_can_redact(self, room_id: str) -> bool:
        """Whether the bot may remove other people's messages in the room (power levels)."""
        try:
            state = await self.bot.get_state(RoomID(room_id))
        except Exception:
            log.warning("Could not read the power levels of %s", room_id, exc_info=True)
            return False
        create = next((e for e in state if e.type == EventType.ROOM_CREATE), None)
        levels = next((e.content for e in state if e.type == EventType.ROOM_POWER_LEVELS), None)
        if not isinstance(levels, PowerLevelStateEventContent):
            return create is not None and create.sender == self.bot_mxid
        return levels.get_user_level(self.bot_mxid, create) >= levels.redact

    async def notify_user(self, mxid: str, text: str, html: str | None = None) -> None:
        user = await self.get_user(mxid)
        if user.level < Level.USER:
            return
        try:
            room = await self.ensure_management_room(user)
            await self.bot.send_notice(RoomID(room), text, html=html)
        except Exception:
            log.exception("Could not send a notice to %s: %s", mxid, text)

    async def _reseal(self, row: UserLoginRow) -> None:
        """After a key rotation: the login's stored secrets sealed again with the current key,
        so the old key can be removed from `bridge.secrets.old_keys`."""
        try:
            metadata, count = self.secret_box.reseal_all(row.metadata)
        except SecretError as e:
            log.error("Login %s: a stored secret cannot be opened (%s)", row.id, e)
            return
        if count:
            row.metadata = metadata
            await self.logins_table.update(row)
            log.info("Login %s: %d stored secret(s) sealed again with key %s",
                     row.id, count, self.secret_box.key_id)

    async def _load_login(self, row: UserLoginRow, *, connect: bool) -> UserLogin:
        login = UserLogin(row=row)
        self.logins[login.id] = login
        try:
            login.client = await self.connector.load_login(login.api())
        except Exception as e:
            log.exception("Could not load login %s", row.id)
            await self.send_login_state(login.id, LoginStateEvent(LoginState.UNKNOWN_ERROR, user_reason(e)))
            return login
        if connect:
            self.spawn(self._connect(login), f"connect-{row.id}")
        return login

    async def _connect(self, login: UserLogin) -> None:
        assert login.client
        try:
            await login.client.connect()
        except Exception as e:
            log.exception("Login %s failed to connect", login.id)
            await self.send_login_state(login.id, LoginStateEvent(LoginState.UNKNOWN_ERROR, user_reason(e)))

    async def add_login(self, user: User, completed: CompletedLogin) -> UserLogin:
        """Store a completed login. The same Matrix user's earlier login to the same account is
        replaced and keeps its ID (and so its rooms, queue and index); anyone else's login to
        that account is a login of its own that never sees this one's data."""
        existing = next((lg for lg in self.logins_of(user.mxid)
                         if lg.row.remote_account == completed.account), None)
        if existing:
            if existing.client:
                await existing.client.disconnect()
            existing.row.metadata = completed.metadata
            existing.row.remote_name = completed.remote_name
            await self.logins_table.update(existing.row)
            existing.client = await self.connector.load_login(existing.api())
            self.spawn(self._connect(existing), f"connect-{existing.id}")
            return existing
        await self.users_table.upsert(UserRow(user.mxid, user.management_room))
        if self.workers is not None and not await self.workers.adopt(user.mxid):
            raise ConnectorError("Another bridge worker serves this account right now; "
                                 "please try again in a minute.")
        row = UserLoginRow(id=await self._new_login_id(), user_mxid=user.mxid,
                           remote_name=completed.remote_name, space_room=None,
                           state=LoginState.CONNECTING.value, metadata=completed.metadata,
                           remote_account=completed.account)
        login = UserLogin(row=row)
        login.client = await self.connector.load_login(login.api())
        await self.logins_table.insert(row)
        self.logins[login.id] = login
        self.spawn(self._connect(login), f"connect-{login.id}")
        return login

    async def _new_login_id(self) -> UserLoginID:
        """A fresh random ID (never one a logged-out login had: its data may not be gone yet)."""
        while True:
            candidate = UserLoginID(secrets.token_hex(6))
            if candidate not in self.logins and await self.logins_table.get(candidate) is None:
                return candidate

    async def remove_login(self, login: UserLogin) -> None:
        if login.client:
            try:
                await login.client.logout()
            except Exception:
                log.exception("Error while logging out %s", login.id)
        # Its queue (unsent mail included), index and sync state go with it.
        await self.connector.delete_login_data(login.id)
        for key in [k for k in self.portals if k[1] == login.id]:
            await self.portals.pop(key).stop()
        for portal_row in await self.portals_table.for_receiver(login.id):
            if portal_row.mxid:  # kept rooms answer that the account is logged out
                await self.retired_portals.add(RetiredPortalRow(
                    portal_row.mxid, login.row.user_mxid, login.row.remote_name))
        self.logins.pop(login.id, None)
        await self.logins_table.delete(login.id)

    async def forget_portal(self, portal: Portal) -> None:
        """Drop a portal from memory and the database (its room is left as it is)."""
        key = (portal.row.id, str(portal.login.id))
        if self.portals.get(key) is portal:
            del self.portals[key]
        await portal.stop()
        await self.portals_table.delete(portal.row.id, portal.login.id)

    async def open_dm(self, login: UserLogin, identifier: str, user_mxid: str, *, create: bool
                      ) -> OpenedChat:
        """The direct chat with `identifier`; with `create`, its room is made (or the user is
        invited again). ConnectorError: no such remote user."""
        resolver = login.capability(StartChatHandler)
        if resolver is None:
            raise ConnectorError("This network does not support starting chats.")
        portal_id, user_id, info = await resolver.resolve_identifier(identifier)
        name = next((m.info.name for m in info.members if m.info and m.info.name), None)
        if not create:
            row = await self.portals_table.get(portal_id, login.id)
            existing = await self.get_portal(portal_id, login) if row else None
            return OpenedChat(existing, user_id, name, created=False)
        portal = await self.get_portal(portal_id, login)
        if portal.room_id:
            try:
                await self.bot.invite_user(RoomID(portal.room_id), UserID(user_mxid))
            except MatrixRequestError as e:  # already a member: nothing to do
                log.info("Not invited again to %s: %s", portal.room_id, e)
            return OpenedChat(portal, user_id, name, created=False)

        async def create_room() -> None:
            await portal.ensure_room(info, user_id)

        await portal.enqueue(create_room)
        return OpenedChat(portal, user_id, name, created=True)

    def ghost_intent(self, mxid: str) -> IntentAPI:
        assert self.az is not None, "bridge not started"
        return self.az.intent(UserID(mxid))

    def logins_of(self, mxid: str) -> list[UserLogin]:
        return [lg for lg in self.logins.values() if lg.row.user_mxid == mxid]

    # ---------------------------------------------------------------- portals and spaces
    async def get_portal(self, portal_id: str, login: UserLogin) -> Portal:
        key = (portal_id, str(login.id))
        async with self._portal_lock:
            portal = self.portals.get(key)
            if portal is None:
                row = await self.portals_table.get(portal_id, login.id)
                if row is None:
                    row = PortalRow(id=portal_id, receiver=login.id)
                    await self.portals_table.upsert(row)
                portal = self.portals[key] = Portal(self, row, login)
            return portal

    async def portal_by_room(self, room_id: str) -> Portal | None:
        for portal in self.portals.values():
            if portal.row.mxid == room_id:
                return portal
        row = await self.portals_table.by_mxid(room_id)
        if row is None or row.receiver not in self.logins:
            return None
        return await self.get_portal(row.id, self.logins[UserLoginID(row.receiver)])

    async def ensure_space(self, login: UserLogin) -> str:
        if login.row.space_room:
            return login.row.space_room
        room_id = await self.bot.create_room(
            name=f"{self.connector.display_name} ({login.row.remote_name})",
            invitees=[UserID(login.row.user_mxid)],
            preset=RoomCreatePreset.PRIVATE,
            creation_content={"type": "m.space"},
            power_level_override={"events_default": 100},
            initial_state=[{"type": "m.room.avatar", "state_key": "", "content": {"url": self.avatar}}]
            if self.avatar else None,
        )
        login.row.space_room = room_id
        await self.logins_table.update(login.row)
        return room_id

    async def add_to_space(self, login: UserLogin, portal: Portal) -> None:
        if portal.row.in_space or not portal.row.mxid:
            return
        try:
            space = await self.ensure_space(login)
            await self.bot.send_state_event(
                RoomID(space), EventType.SPACE_CHILD, {"via": cast(JSON, [self.domain])},
                state_key=portal.row.mxid
            )
            portal.row.in_space = True
            await self.portals_table.upsert(portal.row)
        except Exception:
            log.exception("Could not add %s to the space of %s", portal.row.mxid, login.id)

    # ---------------------------------------------------------------- BridgeAPI
    def public_url(self, path: str) -> str | None:
        return self.public_web.url_for(path)

    def add_public_route(self, method: str, path: str, handler: PublicHandler) -> None:
        self.public_web.add_route(method, path, handler)

    def is_admin(self, user_mxid: str) -> bool:
        return level_for(user_mxid, self.permissions) >= Level.ADMIN

    def encrypt_secret(self, plaintext: str) -> str:
        return self.secret_box.seal(plaintext)

    def decrypt_secret(self, token: str) -> str:
        return self.secret_box.open(token)

    async def queue_remote_event(self, login_id: UserLoginID, event: RemoteEvent) -> PortalID:
        login = self.logins[login_id]
        portal_id = event.portal
        if isinstance(event, RemoteMessage):
            # The core owns where a message lives: one already posted stays where it is (a
            # resend finishes its missing parts there); the event's portal is only a proposal.
            placed = await self.messages.placement(login_id, event.message_id)
            if placed is not None:
                if placed[1]:
                    return PortalID(placed[0])
                portal_id = PortalID(placed[0])
        portal = await self.get_portal(portal_id, login)
        started = time.monotonic()
        await portal.enqueue(lambda: portal.handle_remote(event))
        self.metrics.observe_remote(type(event).__name__, started)
        return portal_id

    async def send_login_state(self, login_id: UserLoginID, state: LoginStateEvent) -> None:
        """Store the state; tell the user about trouble, and about recovery after trouble."""
        login = self.logins.get(login_id)
        if login is None:
            return
        previous, previous_reason = login.state, login.state_reason
        login.state_reason = state.reason
        if previous != state.state:
            login.row.state = state.state.value
            await self.logins_table.update(login.row)
            log.info("Login %s: %s -> %s %s", login_id, previous.value, state.state.value,
                     state.reason or "")
        text: str | None = None
        if state.state.is_error or state.state == LoginState.LOGGED_OUT:
            if (previous, previous_reason) != (state.state, state.reason):
                text = f"{login.row.remote_name}: {STATE_TEXT[state.state]}"
                text += f" ({state.reason})" if state.reason else ""
                login.trouble_reported = state.state.is_error
        elif state.state == LoginState.CONNECTED and login.trouble_reported:
            text = f"{login.row.remote_name}: connected again"
            login.trouble_reported = False
        if text:
            await self.notify_user(login.row.user_mxid, text)

    async def save_login_metadata(self, login_id: UserLoginID, metadata: dict[str, Any]) -> None:
        login = self.logins[login_id]
        login.row.metadata = metadata
        await self.logins_table.update(login.row)

    async def matrix_display_name(self, mxid: str) -> str | None:
        try:
            return await self.bot.get_displayname(UserID(mxid))
        except Exception as e:
            log.info("No display name for %s: %s", mxid, e)
            return None

    async def download_media(self, mxc: str, encrypted_file: dict[str, Any] | None = None) -> bytes:
        data = await self.bot.download_media(mxc)  # type: ignore[arg-type]
        if encrypted_file is None:
            return data
        return Encryption.decrypt_media(data, encrypted_file)

    async def report_send_status(
        self, portal: PortalRef, event_id: str, *, delivered: bool, reason: str | None = None,
        retrying: bool = False,
    ) -> None:
        await self.send_status(RoomID(portal.room_id), event_id, delivered=delivered, reason=reason,
                               retrying=retrying)

    async def send_status(
        self, room: RoomID, event_id: str, *, delivered: bool, reason: str | None = None,
        retrying: bool = False,
    ) -> None:
        """A `com.beeper.message_send_status` event; a final failure also gets a notice."""
        if not delivered and not retrying:
            self.metrics.send_failures.inc()
        status: dict[str, Any] = {
            "network": self.connector.name,
            "m.relates_to": {"rel_type": "m.reference", "event_id": event_id},
            "status": "SUCCESS" if delivered else ("PENDING" if retrying else "FAIL_PERMANENT"),
        }
        if reason:
            status["reason"] = "m.foreign_network_error"
            status["message"] = reason
        try:
            await send_event(self.bot, room, "com.beeper.message_send_status", status)
            if delivered:
                await self.bot.send_receipt(room, event_id)  # type: ignore[arg-type]
            elif not retrying:
                await send_event(self.bot, room, EventType.ROOM_MESSAGE, {
                    "msgtype": "m.notice",
                    "body": f"Not delivered: {reason or 'unknown error'}",
                    "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
                    "m.mentions": {},
                })
        except Exception:
            log.exception("Could not report the send status of %s", event_id)

    async def notify_portal(
        self, login_id: UserLoginID, portal: PortalRef, text: str, *, reply_to_event: str | None = None
    ) -> None:
        content: dict[str, Any] = {"msgtype": "m.notice", "body": text, "m.mentions": {}}
        if reply_to_event:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to_event}}
        await send_event(self.bot, portal.room_id, EventType.ROOM_MESSAGE, content)
