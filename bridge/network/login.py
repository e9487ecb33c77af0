"""Step-wise login flows (bridgev2's LoginProcess), driven by the core's `login` command."""

from __future__ import annotations

from abc import ABC, abstractmethod
import asyncio
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .ids import RemoteAccountID


@dataclass(frozen=True, slots=True)
class LoginField:
    """One value the user has to type. Secret fields are redacted from the room at once."""

    id: str
    name: str
    description: str = ""
    secret: bool = False
    default: str | None = None
    optional: bool = False


class LoginStepKind(str, Enum):
    USER_INPUT = "user_input"
    COMPLETE = "complete"


@dataclass(slots=True)
class CompletedLogin:
    """What a finished login hands the core. The core gives it its login ID (a new one, or the
    ID of the same Matrix user's login to the same account) and then loads its client."""

    account: RemoteAccountID
    remote_name: str
    metadata: dict[str, Any]


@dataclass(slots=True)
class LoginStep:
    kind: LoginStepKind
    step_id: str
    instructions: str
    fields: list[LoginField] = field(default_factory=list)
    # Set on COMPLETE: the checked login, to be stored.
    completed: CompletedLogin | None = None
    # Answers that may also arrive from outside the room (an OAuth provider calling the bridge's
    # public callback): once resolved, the core submits them as if the user had typed them.
    external: asyncio.Future[dict[str, str]] | None = None


class LoginProcess(ABC):
    """One login attempt. `start` returns the first step; `submit` answers a USER_INPUT step."""

    @abstractmethod
    async def start(self) -> LoginStep: ...

    @abstractmethod
    async def submit(self, values: dict[str, str]) -> LoginStep: ...

    def prefill_fields(self) -> list[str]:
        """Every field ID `login key=value` may fill in, over all steps. Empty: the first step's."""
        return []

    async def cancel(self) -> None:  # noqa: B027 - optional hook
        """Release anything the attempt holds."""
