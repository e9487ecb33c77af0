"""Bot commands in a management room: help, login, logout, list-logins, ping, version, start-chat."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import difflib
import logging
import shlex
from typing import TYPE_CHECKING
from urllib.parse import quote

from mautrix.types import RoomID

from ..network import (
    ConnectorError,
    DisplayNameHandler,
    LoginFailed,
    LoginStep,
    LoginStepKind,
)
from .chat_commands import ChatCommands
from .help_text import HelpEntry, render_help
from .permissions import Level
from .room_cleanup import delete_login_rooms
from .user import LoginFlow, User
from .user_login import STATE_TEXT, UserLogin

if TYPE_CHECKING:
    from .bridge import Bridge
    from .portal import Portal

log = logging.getLogger("letterbox.commands")

COMMAND_PREFIX = "!lb"


def matrix_to(room_id: str) -> str:
    """A link any Matrix client opens."""
    return f"https://matrix.to/#/{quote(room_id, safe='')}"


def command_text(body: str) -> str | None:
    """The command of a message that starts with the prefix (after any reply fallback), else None.

    Such a message is a command in every room: it is never sent to the network.
    """
    lines = body.splitlines()
    if lines and lines[0].startswith(">"):  # a reply fallback: quoted lines, then an empty line
        while lines and lines[0].startswith(">"):
            lines.pop(0)
        if lines and not lines[0].strip():
            lines.pop(0)
    text = "\n".join(lines).lstrip()
    if text[:len(COMMAND_PREFIX)].lower() != COMMAND_PREFIX:
        return None
    return text[len(COMMAND_PREFIX):].strip()


@dataclass(slots=True)
class CommandEvent:
    user: User
    room_id: RoomID
    event_id: str
    args: list[str]
    management: bool
    # The portal the command was sent in (`!lb <command>` in a chat), if any.
    portal: Portal | None = None


ACCOUNTS, CHATS, BRIDGE = "Your accounts", "Chats", "The bridge"
GROUPS = (ACCOUNTS, CHATS, BRIDGE)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    handler: Callable[[CommandEvent], Awaitable[None]]
    help: str
    usage: str = ""
    level: Level = Level.USER
    management_only: bool = False
    group: str = BRIDGE


class CommandProcessor:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.commands: dict[str, Command] = {}
        chats = ChatCommands(self)
        for cmd in (
            Command("login", self.cmd_login, "Log in to a mailbox, step by step (in a private chat "
                    "with me).", "login [key=value …]", management_only=True, group=ACCOUNTS),
            Command("cancel", self.cmd_cancel, "Stop a login in progress.", management_only=True,
                    group=ACCOUNTS),
            Command("list-logins", self.cmd_list_logins, "Your accounts and their state.",
                    group=ACCOUNTS),
            Command("set-name", self.cmd_set_name,
                    "The name shown beside your address to the people you write to.",
                    "set-name <name> [--login <login>]", group=ACCOUNTS),
            Command("logout", self.cmd_logout, "Log out of an account.", "logout <login>",
                    group=ACCOUNTS),
            Command("start-chat", self.cmd_start_chat, "Open a chat with someone new.",
                    "start-chat <identifier> [--login <login>]", group=CHATS),
            Command("sync", chats.cmd_sync, "Check for new messages now.",
                    "sync [--login <login>]", group=ACCOUNTS),
            Command("backfill", chats.cmd_backfill, "Bring in older messages of this room "
                    "(or, in a chat with me, of the whole account).",
                    "backfill [n] [--login <login>]", group=CHATS),
            Command("delete-portal", chats.cmd_delete_portal, "Leave and forget this room "
                    "(send it in the room).", "delete-portal", group=CHATS),
            Command("help", self.cmd_help, "This help.", level=Level.RELAY),
            Command("ping", self.cmd_ping, "Check that the bridge is alive and show your logins.",
                    level=Level.RELAY),
            Command("version", self.cmd_version, "The bridge version.", level=Level.RELAY),
        ):
            self.commands[cmd.name] = cmd

    async def reply(self, room_id: str, text: str, html: str | None = None) -> None:
        await self.bridge.bot.send_notice(RoomID(room_id), text, html=html)

    async def handle(self, user: User, room_id: str, event_id: str, text: str, *, management: bool,
                     portal: Portal | None = None) -> None:
        if user.login_flow and management and user.login_flow.room_id == room_id:
            stripped = text.strip()
            if stripped.lower() not in ("cancel", "help"):
                await self._login_input(user, room_id, event_id, stripped)
                return
        try:
            args = shlex.split(text)
        except ValueError:
            args = text.split()
        if not args:
            return
        name = args[0].lower()
        cmd = self.commands.get(name)
        if cmd is None:
            # The text is not repeated: it may be a secret typed in the wrong place.
            close = difflib.get_close_matches(name, list(self.commands), n=1)
            text = "That is not a command I know."
            text += f" Did you mean `{close[0]}`?" if close else ""
            if user.login_flow and user.login_flow.room_id != room_id:
                text += f" Your login continues in {matrix_to(user.login_flow.room_id)}."
            await self.reply(room_id, text + " Send `help` for the list.")
            return
        if user.level < cmd.level:
            await self.reply(room_id, "You do not have permission to use that command.")
            return
        if cmd.management_only and not management:
            await self.reply(room_id, f"`{name}` only works in a private chat with me (your management room).")
            return
        try:
            await cmd.handler(CommandEvent(user, RoomID(room_id), event_id, args[1:], management, portal))
        except ConnectorError as e:
            await self.reply(room_id, f"{name} failed: {e.reason}")
        except Exception:
            log.exception("Command %s by %s failed", name, user.mxid)
            await self.reply(room_id, f"{name} failed because of an internal error (see the bridge log).")

    # ---------------------------------------------------------------- simple commands
    async def cmd_help(self, evt: CommandEvent) -> None:
        entries = [HelpEntry(c.group, c.usage or c.name, c.help) for c in self.commands.values()
                   if evt.user.level >= c.level]
        text, html = render_help(entries, GROUPS, f"`{COMMAND_PREFIX}`")
        await self.reply(evt.room_id, text, html)

    async def cmd_ping(self, evt: CommandEvent) -> None:
        logins = self.bridge.logins_of(evt.user.mxid)
        text = "Pong! The bridge is running."
        if logins:
            text += " Your logins: " + ", ".join(f"{lg.row.remote_name} ({lg.state.value})" for lg in logins)
        await self.reply(evt.room_id, text)

    async def cmd_version(self, evt: CommandEvent) -> None:
        await self.reply(evt.room_id, f"Letterbox {self.bridge.version} ({self.bridge.connector.display_name} connector)")

    async def cmd_list_logins(self, evt: CommandEvent) -> None:
        logins = self.bridge.logins_of(evt.user.mxid)
        if not logins:
            await self.reply(evt.room_id, "You have no logins. Send `login` to add one.")
            return
        lines = [f"• {lg.row.remote_name}: {STATE_TEXT[lg.state]}"
                 + (f" ({lg.state_reason})" if lg.state_reason else "") for lg in logins]
        await self.reply(evt.room_id, "Your logins:\n" + "\n".join(lines))

    async def cmd_logout(self, evt: CommandEvent) -> None:
        flags = {a for a in evt.args if a in ("--delete-rooms", "--keep-rooms")}
        evt.args = [a for a in evt.args if a not in flags]
        logins = self.bridge.logins_of(evt.user.mxid)
        if not evt.args:
            if len(logins) != 1:
                await self.reply(evt.room_id, "Usage: `logout <login>` (see `list-logins`).")
                return
            login = logins[0]
        else:
            found = [lg for lg in logins if evt.args[0] in (lg.id, lg.row.remote_name)]
            if not found:
                await self.reply(evt.room_id, f"You have no login `{evt.args[0]}`.")
                return
            login = found[0]
        name = login.row.remote_name
        rooms = [r for r in await self.bridge.portals_table.for_receiver(login.id) if r.mxid]
        if not flags and (rooms or login.row.space_room):
            await self.reply(evt.room_id, (
                f"{name} has {len(rooms)} room{'s' if len(rooms) != 1 else ''} and a space. Send\n"
                f"• `logout {name} --delete-rooms` to log out and remove them, or\n"
                f"• `logout {name} --keep-rooms` to log out and keep them (their history stays)."))
            return
        removed = 0
        if "--delete-rooms" in flags:
            removed = await delete_login_rooms(self.bridge, login, f"Logged out of {name}")
        await self.bridge.remove_login(login)
        done = f"Logged out of {name}."
        if removed:
            done += f" Removed its {removed} room{'s' if removed != 1 else ''} and its space."
        await self.reply(evt.room_id, done)

    async def chosen_login(self, evt: CommandEvent) -> tuple[UserLogin | None, list[str]]:
        """The login a command is about: `--login <login>`, else the chat's, else the only one.
        None (after telling the user why) when that is not clear."""
        args = list(evt.args)
        logins = self.bridge.logins_of(evt.user.mxid)
        if "--login" in args:
            idx = args.index("--login")
            wanted = args[idx + 1] if idx + 1 < len(args) else ""
            del args[idx:idx + 2]
            found = [lg for lg in logins if wanted in (lg.id, lg.row.remote_name)]
            if not found:
                await self.reply(evt.room_id, f"You have no login `{wanted}` (see `list-logins`).")
                return None, args
            return found[0], args
        if evt.portal is not None and evt.portal.login.row.user_mxid == evt.user.mxid:
            return evt.portal.login, args
        if not logins:
            await self.reply(evt.room_id, "You have no login yet: send `login` to me first.")
            return None, args
        if len(logins) > 1:
            await self.reply(evt.room_id, "You have several logins: add `--login <address>` "
                                          "(see `list-logins`).")
            return None, args
        return logins[0], args

    async def cmd_set_name(self, evt: CommandEvent) -> None:
        login, args = await self.chosen_login(evt)
        if login is None:
            return
        if not args:
            await self.reply(evt.room_id, "Usage: `set-name <name> [--login <login>]`")
            return
        namer = login.capability(DisplayNameHandler)
        if namer is None:
            await self.reply(evt.room_id, f"{login.row.remote_name} cannot change its name here "
                                          "(not connected, or the network does not support it).")
            return
        name = " ".join(args)
        shown = await namer.set_display_name(name)
        await self.reply(evt.room_id, f"{login.row.remote_name} now sends as: {shown}")

    async def cmd_start_chat(self, evt: CommandEvent) -> None:
        login, args = await self.chosen_login(evt)
        if login is None:
            return
        if not args:
            await self.reply(evt.room_id, "Usage: `start-chat <identifier> [--login <login>]`")
            return
        chat = await self.bridge.open_dm(login, args[0], evt.user.mxid, create=True)
        assert chat.portal is not None and chat.portal.room_id
        link = matrix_to(chat.portal.room_id)
        await self.reply(evt.room_id, f"Created a chat with {args[0]}: {link}" if chat.created
                         else f"You already have a chat with {args[0]} (invited again): {link}")

    # ---------------------------------------------------------------- login flow
    async def cmd_login(self, evt: CommandEvent) -> None:
        if not evt.user.can_login:
            await self.reply(evt.room_id, "You do not have permission to log in.")
            return
        if evt.user.login_flow:
            await evt.user.login_flow.process.cancel()
            evt.user.login_flow = None
        process = self.bridge.connector.create_login(evt.user.mxid)
        step = await process.start()
        pairs = [a.split("=", 1) for a in evt.args if "=" in a]
        prefilled = {k.strip().lower(): v for k, v in pairs}
        valid = process.prefill_fields() or [f.id for f in step.fields]
        secret_ids = {f.id for f in step.fields if f.secret}
        if any(k in secret_ids or k in self.bridge.connector.secret_login_fields for k in prefilled):
            await self.redact_secret(evt.room_id, evt.event_id)
        loose = [a for a in evt.args if "=" not in a]
        unknown = sorted(set(prefilled) - set(valid))
        if loose or unknown:
            await process.cancel()
            what = (f"Unknown option {', '.join(f'`{k}`' for k in unknown)}." if unknown
                    else "Options must look like `key=value`.")
            await self.reply(evt.room_id, f"{what}\nValid options: "
                             + ", ".join(f"`{k}=…`" for k in valid)
                             + "\nOr send just `login` and answer the questions.")
            return
        flow = LoginFlow(process=process, step=step, room_id=evt.room_id, prefilled=prefilled)
        flow.apply_prefilled()
        evt.user.login_flow = flow
        await self.reply(evt.room_id, step.instructions + "\nSend `cancel` to stop.")
        await self._advance(evt.user)

    async def cmd_cancel(self, evt: CommandEvent) -> None:
        if evt.user.login_flow is None:
            await self.reply(evt.room_id, "Nothing to cancel.")
            return
        await evt.user.login_flow.process.cancel()
        evt.user.login_flow = None
        await self.reply(evt.room_id, "Login cancelled.")

    async def _login_input(self, user: User, room_id: str, event_id: str, text: str) -> None:
        flow = user.login_flow
        assert flow is not None
        if event_id in flow.answered:
            log.info("Answer %s of %s handled again; asking the next question again", event_id,
                     user.mxid)
            await self._advance(user)
            return
        field = flow.next_field()
        if field is None:
            return
        flow.answered.add(event_id)
        if field.secret:
            await self.redact_secret(room_id, event_id)
        if text in ("", "-") and (field.default is not None or field.optional):
            text = field.default or ""
        flow.values[field.id] = text
        await self._advance(user)

    async def _advance(self, user: User) -> None:
        flow = user.login_flow
        assert flow is not None
        field = flow.next_field()
        if field is not None:
            if field.secret and not await self._secret_safe_room(user, flow):
                return
            hint = f" (send `-` for the default: {field.default})" if field.default else ""
            if field.optional and not field.default:
                hint = " (send `-` to skip)"
            secret = " It is removed from this room at once." if field.secret else ""
            await self.reply(flow.room_id, f"{field.name}: {field.description}{hint}{secret}".strip())
            return
        try:
            step = await flow.process.submit(flow.values)
        except LoginFailed as e:
            await self.reply(flow.room_id, f"Login failed: {e.reason}")
            if e.retry_step:
                if e.fields:  # ask again for exactly what was wrong
                    flow.values = {k: v for k, v in flow.values.items() if k not in e.fields}
                    flow.prefilled = {k: v for k, v in flow.prefilled.items() if k not in e.fields}
                else:
                    # Ask again for the secrets only (what was typed in the clear stays), or for
                    # everything when the step has no secret.
                    secret_ids = {f.id for f in flow.step.fields if f.secret}
                    flow.values = {k: v for k, v in flow.values.items()
                                   if secret_ids and k not in secret_ids}
                    flow.prefilled = {}
                await self._advance(user)
            else:
                user.login_flow = None
            return
        except Exception:
            log.exception("Login step failed for %s", user.mxid)
            user.login_flow = None
            await self.reply(flow.room_id, "Login failed because of an internal error (see the bridge log).")
            return
        await self._step(user, step)

    async def _secret_safe_room(self, user: User, flow: LoginFlow) -> bool:
        """Before asking for a secret: can the bot remove it from the room? If not, move the
        login to a new private chat the bot controls. False when the question moved."""
        if flow.room_id in flow.redactable_rooms:
            return True
        if await self.bridge.bot_can_redact(flow.room_id):
            flow.redactable_rooms.add(flow.room_id)
            return True
        old_room = flow.room_id
        new_room = await self.bridge.create_management_room(user)
        flow.room_id = new_room
        flow.redactable_rooms.add(new_room)
        await self.reply(old_room, (
            "I cannot remove messages in this room, so a password sent here would stay in it.\n"
            f"I invited you to a new private chat where I can: {matrix_to(new_room)}\n"
            "The login continues there."))
        await self.reply(new_room, "Your login continues here (I can remove secrets from this room).")
        await self._advance(user)
        return False

    async def _step(self, user: User, step: LoginStep) -> None:
        flow = user.login_flow
        assert flow is not None
        if step.kind == LoginStepKind.COMPLETE:
            user.login_flow = None
            assert step.completed is not None
            login = await self.bridge.add_login(user, step.completed)
            await self.reply(flow.room_id, step.instructions or f"Logged in as {login.row.remote_name}.")
            return
        flow.step = step
        flow.values = {}
        flow.apply_prefilled()
        await self.reply(flow.room_id, step.instructions)
        if step.external is not None:
            self.bridge.spawn(self._external_answers(user, flow, step), f"login-external-{user.mxid}")
        await self._advance(user)

    async def _external_answers(self, user: User, flow: LoginFlow, step: LoginStep) -> None:
        """Submit a step's answers that came from outside the room (e.g. an OAuth callback)."""
        assert step.external is not None
        try:
            values = await step.external
        except asyncio.CancelledError:
            return  # the login was cancelled or moved on
        if user.login_flow is not flow or flow.step is not step:
            return  # answered in the room meanwhile
        flow.values = dict(values)
        await self._advance(user)

    async def redact_secret(self, room_id: str, event_id: str) -> None:
        try:
            await self.bridge.bot.redact(RoomID(room_id), event_id, reason="Secret removed by the bridge")  # type: ignore[arg-type]
        except Exception as e:
            log.warning("Could not redact a secret in %s: %s", room_id, e)
            await self.reply(room_id, "I could not remove your secret from this room; please delete that message yourself.")

