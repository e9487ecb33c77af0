"""The connector contract: what a network connector implements and what the core gives it.

Shaped after mautrix-go's bridgev2: a `NetworkConnector` per network, a `NetworkClient` per
login, a step-wise `LoginProcess`, remote events pushed into the core, and optional capability
interfaces the core probes with `isinstance`.
"""

from __future__ import annotations

from .capabilities import (
    BackfillHandler,
    DisplayNameHandler,
    EditHandler,
    ReactionHandler,
    ReadReceiptHandler,
    RedactionHandler,
    StartChatHandler,
    SyncHandler,
)
from .connector import BridgeAPI, LoginAPI, NetworkClient, NetworkConnector
from .errors import (
    ActionNotSupported,
    ConfigError,
    ConnectorError,
    LoginFailed,
    is_infrastructure_error,
)
from .events import (
    ChatInfo,
    ChatMember,
    RemoteChatInfoChange,
    RemoteDelete,
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteReaction,
    RemoteReadReceipt,
    UserInfo,
)
from .ids import MessageID, NetworkUserID, PortalID, RemoteAccountID, UserLoginID
from .login import CompletedLogin, LoginField, LoginProcess, LoginStep, LoginStepKind
from .matrix import (
    MatrixEdit,
    MatrixMessage,
    MatrixReaction,
    MatrixReadReceipt,
    MatrixRedaction,
    PortalRef,
)
from .metrics import GaugeReading
from .state import LoginState, LoginStateEvent

__all__ = [
    "ActionNotSupported",
    "BackfillHandler",
    "BridgeAPI",
    "ChatInfo",
    "ChatMember",
    "CompletedLogin",
    "ConfigError",
    "ConnectorError",
    "DisplayNameHandler",
    "EditHandler",
    "GaugeReading",
    "LoginAPI",
    "LoginFailed",
    "LoginField",
    "LoginProcess",
    "LoginState",
    "LoginStateEvent",
    "LoginStep",
    "LoginStepKind",
    "MatrixEdit",
    "MatrixMessage",
    "MatrixReaction",
    "MatrixReadReceipt",
    "MatrixRedaction",
    "MessageID",
    "NetworkClient",
    "NetworkConnector",
    "NetworkUserID",
    "PortalID",
    "PortalRef",
    "ReactionHandler",
    "ReadReceiptHandler",
    "RedactionHandler",
    "RemoteAccountID",
    "RemoteChatInfoChange",
    "RemoteDelete",
    "RemoteEdit",
    "RemoteEvent",
    "RemoteMessage",
    "RemoteReaction",
    "RemoteReadReceipt",
    "StartChatHandler",
    "SyncHandler",
    "UserInfo",
    "UserLoginID",
    "is_infrastructure_error",
]
