"""A Matrix user of the bridge: permission level, management room and an ongoing login."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..network import LoginField, LoginProcess, LoginStep
from .permissions import Level


@dataclass(slots=True)
class LoginFlow:
    """Where a user is in a connector's step-wise login."""

    process: LoginProcess
    step: LoginStep
    # The room the answers are read from (secrets are redacted there).
    room_id: str
    values: dict[str, str] = field(default_factory=dict)
    # Values given inline (`login field=value`), applied to every step that has the field.
    prefilled: dict[str, str] = field(default_factory=dict)
    # Rooms where the bot was found able to remove messages (checked before asking a secret).
    redactable_rooms: set[str] = field(default_factory=set)
    # Events already taken as answers: an event handled again (the inbox retries a handler that
    # failed after taking it, e.g. while asking the next question) is not a second answer.
    answered: set[str] = field(default_factory=set)

    def apply_prefilled(self) -> None:
        ids = {f.id for f in self.step.fields}
        self.values.update({k: v for k, v in self.prefilled.items() if k in ids})

    def wants_secret(self) -> bool:
        """A secret field of the current step is still unanswered."""
        return any(f.secret and f.id not in self.values for f in self.step.fields)

    def next_field(self) -> LoginField | None:
        for f in self.step.fields:
            if f.id not in self.values:
                return f
        return None


@dataclass(slots=True)
class User:
    mxid: str
    level: Level
    management_room: str | None = None
    login_flow: LoginFlow | None = None

    @property
    def can_login(self) -> bool:
        return self.level >= Level.USER
