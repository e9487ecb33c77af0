"""Messages that may carry a secret are scrubbed before the intake stores them.

The intake stores every Matrix event before it acknowledges the transaction. A message that
answers a secret prompt (a password step of a login) or that types a secret inline
(`login password=...`) must not reach the database: the intake stores a scrubbed copy and this
module holds the original text in memory only, until the command handler takes it. A restart
loses what was held; the handler then tells the user to start again, so a secret is asked for
twice rather than stored once.

Which (room, user) currently expects a secret is the core's fact (`expecting`); the intake also
arms a (room, user) as soon as it sees a `login` command, so a secret typed before the bot's
prompt was handled is caught too.

With several worker processes the intake and the handler of a message may be different
processes, and the intake cannot know which prompt another worker is showing: every text
message is then stored sealed (encrypted with the bridge's secrets key, as stored credentials
are) and opened by the worker that handles it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import json
import shlex
import time
from typing import Any, Protocol

# The content key that marks a scrubbed message (a namespaced key: clients never send it).
SCRUBBED_KEY = "net.letterbox.scrubbed"
# With several workers: the sealed original content of a scrubbed message.
SEALED_KEY = "net.letterbox.sealed"
SCRUBBED_BODY = "(removed by the bridge: this message may hold a secret)"
COMMAND_PREFIX = "!lb"

Expecting = Callable[[str, str], bool]


class Sealer(Protocol):
    def seal(self, plaintext: str) -> str: ...

    def open(self, token: str) -> str: ...


@dataclass(slots=True)
class _Held:
    content: dict[str, Any]
    until: float


def _command_words(body: str) -> list[str]:
    text = body.strip()
    if text.startswith(COMMAND_PREFIX):
        text = text[len(COMMAND_PREFIX):].strip()
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


class SecretInput:
    """Scrubs secret-bearing messages at the intake and hands their text over in memory."""

    def __init__(self, expecting: Expecting, secret_fields: frozenset[str], *,
                 login_command: str = "login", hold_seconds: float = 600.0,
                 sealer: Sealer | None = None) -> None:
        # Several workers: every text message is stored sealed (see the module's docstring).
        self.sealer = sealer
        self._expecting = expecting
        self._secret_fields = secret_fields
        self._login_command = login_command
        self._hold_seconds = hold_seconds
        self._held: dict[str, _Held] = {}
        # (room, user) -> deadlines of `login` commands stored but not yet handled
        self._armed: dict[tuple[str, str], list[float]] = {}

    # ---------------------------------------------------------------- intake side
    def scrub(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event as it may be stored: unchanged, or with its content replaced."""
        if event.get("type") != "m.room.message":
            return event
        content = event.get("content")
        room_id, sender, event_id = event.get("room_id"), event.get("sender"), event.get("event_id")
        if not isinstance(content, dict) or not isinstance(event_id, str):
            return event
        if not isinstance(room_id, str) or not isinstance(sender, str):
            return event
        body = content.get("body")
        body = body if isinstance(body, str) else ""
        new_content = content.get("m.new_content")
        if isinstance(new_content, dict) and isinstance(new_content.get("body"), str):
            body = new_content["body"]  # an edit: its new text is what would be read
        if self.sealer is not None:
            return self._scrubbed(event, content, {SEALED_KEY: self.sealer.seal(json.dumps(content))})
        now = time.monotonic()
        self._expire(now)
        words = _command_words(body)
        is_login = self.is_login_command(body)
        if is_login:
            self._armed.setdefault((room_id, sender), []).append(now + self._hold_seconds)
        if not (self._expecting(room_id, sender) or (room_id, sender) in self._armed
                or (is_login and self._inline_secret(words[1:]))):
            return event
        self._held[event_id] = _Held(content, now + self._hold_seconds)
        return self._scrubbed(event, content, {})

    @staticmethod
    def _scrubbed(event: dict[str, Any], content: dict[str, Any], extra: dict[str, Any]
                  ) -> dict[str, Any]:
        scrubbed: dict[str, Any] = {"msgtype": "m.text", "body": SCRUBBED_BODY, SCRUBBED_KEY: True,
                                    **extra}
        if isinstance(content.get("m.relates_to"), dict):
            scrubbed["m.relates_to"] = content["m.relates_to"]
        return {**event, "content": scrubbed, "unsigned": {}}

    def holds_inline_secret(self, body: str) -> bool:
        """`login field=value ...` naming a secret field."""
        words = _command_words(body)
        return self.is_login_command(body) and self._inline_secret(words[1:])

    def _inline_secret(self, args: list[str]) -> bool:
        return any(a.partition("=")[0].lower() in self._secret_fields for a in args if "=" in a)

    # ---------------------------------------------------------------- handler side
    def held(self, event_id: str) -> dict[str, Any] | None:
        """The original content of a scrubbed message; None after a restart or expiry.

        It stays held while its handler runs, so a handler that fails and is retried by the inbox
        reads it again; `forget` drops it once the message was handled.
        """
        self._expire(time.monotonic())
        held = self._held.get(event_id)
        return held.content if held else None

    def recover(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The original content of a scrubbed event: held in memory, or sealed in the event
        (several workers); None when it was lost."""
        held = self.held(str(event.get("event_id")))
        if held is not None:
            return held
        token = (event.get("content") or {}).get(SEALED_KEY)
        if self.sealer is None or not isinstance(token, str):
            return None
        try:
            content = json.loads(self.sealer.open(token))
        except Exception:
            return None
        return content if isinstance(content, dict) else None

    def forget(self, event_id: str) -> None:
        self._held.pop(event_id, None)

    def disarm(self, room_id: str, sender: str) -> None:
        """A `login` command was handled: from now on its login flow says what is secret."""
        pending = self._armed.get((room_id, sender))
        if pending:
            pending.pop(0)
            if not pending:
                del self._armed[(room_id, sender)]

    def is_login_command(self, body: str) -> bool:
        words = _command_words(body)
        return bool(words) and words[0].lower() == self._login_command

    def _expire(self, now: float) -> None:
        for event_id in [k for k, h in self._held.items() if h.until < now]:
            del self._held[event_id]
        for key, deadlines in list(self._armed.items()):
            deadlines[:] = [d for d in deadlines if d >= now]
            if not deadlines:
                del self._armed[key]


def is_scrubbed(content: dict[str, Any]) -> bool:
    return content.get(SCRUBBED_KEY) is True
