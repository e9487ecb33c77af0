"""A tiny in-process network used to prove that the core is network-agnostic.

"Remote" users are plain names; the test injects their messages with `LoopbackClient.receive`
and reads what Matrix users sent from `LoopbackClient.sent` and from the connector's own table.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
import itertools
from typing import Any

from mautrix.util.async_db import UpgradeTable

from bridge.network import (
    BridgeAPI,
    ChatInfo,
    ChatMember,
    CompletedLogin,
    LoginAPI,
    LoginFailed,
    LoginField,
    LoginProcess,
    LoginState,
    LoginStateEvent,
    LoginStep,
    LoginStepKind,
    MatrixMessage,
    MessageID,
    NetworkClient,
    NetworkConnector,
    NetworkUserID,
    PortalID,
    RemoteAccountID,
    RemoteEvent,
    RemoteMessage,
    StartChatHandler,
    UserInfo,
)
from bridge.network.events import ConvertedPart

upgrade_table = UpgradeTable(version_table_name="loopback_version", database_name="loopback")


@upgrade_table.register(description="Sent message log")
async def _v1(conn: Any) -> None:
    await conn.execute(
        "CREATE TABLE loopback_sent (event_id TEXT PRIMARY KEY, login_id TEXT NOT NULL, body TEXT NOT NULL)"
    )


PASSWORD = "open sesame"


class LoopbackConnector(NetworkConnector):
    name = "loopback"
    display_name = "Loopback"

    def __init__(self) -> None:
        self.bridge: BridgeAPI | None = None
        self.clients: dict[str, LoopbackClient] = {}
        self._ids = itertools.count(1)

    def example_config(self) -> str:
        return "# Greeting sent by remote users when a chat starts.\ngreeting: hello\n"

    @property
    def upgrade_table(self) -> UpgradeTable:
        return upgrade_table

    async def start(self, bridge: BridgeAPI, config: dict[str, Any]) -> None:
        self.bridge = bridge
        self.greeting = config["greeting"]

    def create_login(self, user_mxid: str) -> LoginProcess:
        return LoopbackLogin(self, user_mxid)

    async def load_login(self, login: LoginAPI) -> NetworkClient:
        assert self.bridge
        # The secret is stored sealed; opening it proves the round trip through the core's box.
        if self.bridge.decrypt_secret(login.metadata["password"]) != PASSWORD:
            raise LoginFailed("stored password is wrong")
        client = LoopbackClient(self, login)
        self.clients[login.remote_name] = client  # tests find a client by its user name
        return client

    def next_id(self) -> str:
        return f"loop-{next(self._ids)}"


class LoopbackLogin(LoginProcess):
    def __init__(self, connector: LoopbackConnector, user_mxid: str) -> None:
        self.connector = connector
        self.user_mxid = user_mxid

    async def start(self) -> LoginStep:
        return LoginStep(
            kind=LoginStepKind.USER_INPUT,
            step_id="credentials",
            instructions="Log in to the loopback network.",
            fields=[
                LoginField("username", "Username", "your loopback name"),
                LoginField("password", "Password", "your loopback password", secret=True),
            ],
        )

    async def submit(self, values: dict[str, str]) -> LoginStep:
        if values["password"] != PASSWORD:
            raise LoginFailed("wrong password")
        assert self.connector.bridge
        completed = CompletedLogin(
            account=RemoteAccountID(values["username"]),
            remote_name=values["username"],
            metadata={"password": self.connector.bridge.encrypt_secret(values["password"])},
        )
        return LoginStep(kind=LoginStepKind.COMPLETE, step_id="done",
                         instructions=f"Logged in to loopback as {values['username']}.",
                         completed=completed)


class LoopbackClient(NetworkClient, StartChatHandler):
    def __init__(self, connector: LoopbackConnector, login: LoginAPI) -> None:
        self.connector = connector
        self.login = login
        self.sent: asyncio.Queue[MatrixMessage] = asyncio.Queue()
        self.connected = False

    @property
    def bridge(self) -> BridgeAPI:
        assert self.connector.bridge
        return self.connector.bridge

    async def connect(self) -> None:
        self.connected = True
        await self.bridge.send_login_state(self.login.login_id, LoginStateEvent(LoginState.CONNECTED))

    async def disconnect(self) -> None:
        self.connected = False

    async def receive(self, sender: str, text: str, *, chat: str | None = None,
                      thread_root: str | None = None, reply_to: str | None = None) -> MessageID:
        """A remote user writes to us."""
        message_id = MessageID(self.connector.next_id())
        members = [ChatMember(NetworkUserID(sender), UserInfo(name=sender.title()))]
        await self.bridge.queue_remote_event(self.login.login_id, RemoteMessage(
            portal=PortalID(chat or f"dm:{sender}"),
            sender=NetworkUserID(sender),
            sender_info=UserInfo(name=sender.title()),
            timestamp=datetime.now(UTC),
            chat_info=ChatInfo(members=members, is_direct=chat is None, name=chat),
            message_id=message_id,
            parts=[ConvertedPart("m.room.message", {"msgtype": "m.text", "body": text, "m.mentions": {}})],
            thread_root=MessageID(thread_root) if thread_root else None,
            reply_to=MessageID(reply_to) if reply_to else None,
        ))
        return message_id

    async def remote(self, event: RemoteEvent) -> None:
        """Any other remote event (edit, reaction, receipt, delete) from the network."""
        await self.bridge.queue_remote_event(self.login.login_id, event)

    async def handle_matrix_message(self, msg: MatrixMessage) -> MessageID | None:
        await self.bridge.connector_db.execute(
            "INSERT INTO loopback_sent (event_id, login_id, body) VALUES ($1, $2, $3)",
            msg.event_id, self.login.login_id, msg.content.get("body", ""),
        )
        await self.sent.put(msg)
        return MessageID(self.connector.next_id())

    async def resolve_identifier(self, identifier: str) -> tuple[PortalID, NetworkUserID, ChatInfo]:
        user = NetworkUserID(identifier)
        return PortalID(f"dm:{identifier}"), user, ChatInfo(
            members=[ChatMember(user, UserInfo(name=identifier.title()))], is_direct=True)
