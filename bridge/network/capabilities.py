"""Optional capabilities a NetworkClient may implement; the core checks with isinstance.

An action whose capability is missing gets a clear notice in the room instead of silence.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .events import ChatInfo
from .ids import NetworkUserID, PortalID
from .matrix import MatrixEdit, MatrixReaction, MatrixReadReceipt, MatrixRedaction, PortalRef


class EditHandler(ABC):
    @abstractmethod
    async def handle_matrix_edit(self, edit: MatrixEdit) -> None: ...


class ReactionHandler(ABC):
    @abstractmethod
    async def handle_matrix_reaction(self, reaction: MatrixReaction) -> None: ...


class RedactionHandler(ABC):
    @abstractmethod
    async def handle_matrix_redaction(self, redaction: MatrixRedaction) -> None: ...


class ReadReceiptHandler(ABC):
    @abstractmethod
    async def handle_matrix_read_receipt(self, receipt: MatrixReadReceipt) -> None: ...


class StartChatHandler(ABC):
    """`start-chat <identifier>`: resolve a remote identifier into a portal to create."""

    @abstractmethod
    async def resolve_identifier(
        self, identifier: str
    ) -> tuple[PortalID, NetworkUserID, ChatInfo]: ...


class DisplayNameHandler(ABC):
    """`set-name`: the name the network shows beside the user's remote identifier."""

    @abstractmethod
    async def set_display_name(self, name: str) -> str:
        """Store the new name; returns it as the network will show it."""


class SyncHandler(ABC):
    """`sync`: look for new remote messages now instead of waiting."""

    @abstractmethod
    async def sync_now(self) -> None: ...


class BackfillHandler(ABC):
    """`backfill <n>`: bring in up to `count` older messages never bridged, of one portal (or of
    the whole login when `portal` is None). Returns how many were brought in."""

    @abstractmethod
    async def backfill(self, portal: PortalRef | None, count: int) -> int: ...
