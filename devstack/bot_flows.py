"""Conversations with the bridge bot, shared by the end-to-end tests, the benchmarks and the demo."""

from __future__ import annotations

from typing import Protocol

from .e2ee_client import E2EEUser
from .matrix_client import MatrixTestClient

User = MatrixTestClient | E2EEUser


class HasBot(Protocol):
    """A running bridge (in-process or a subprocess): anything that names its bot."""

    @property
    def bot_mxid(self) -> str: ...


def notices(client: MatrixTestClient, room: str, sender: str) -> list[str]:
    return [e["content"].get("body", "") for e in client.messages(room, sender)
            if e["content"].get("msgtype") == "m.notice"]


async def wait_notice(client: MatrixTestClient, room: str, sender: str, text: str, count: int = 1,
                      timeout: float = 15.0) -> list[str]:
    def found() -> list[str] | None:
        matching = [n for n in notices(client, room, sender) if text in n]
        return matching if len(matching) >= count else None
    return await client.wait_for(found, timeout,
                                 describe=lambda: f"notices so far: {notices(client, room, sender)}")


async def expect_notice(user: User, room: str, sender: str, text: str, timeout: float = 15.0) -> str:
    """The latest notice of `sender` containing `text`, from a plain or an encrypting client."""
    if isinstance(user, E2EEUser):
        return await user.wait_notice(room, sender, text, timeout)
    return (await wait_notice(user, room, sender, text, timeout=timeout))[-1]


async def management_room(bridge: HasBot, user: User) -> str:
    """A private chat with the bot (encrypted when `user` is an encrypting client)."""
    if isinstance(user, E2EEUser):
        room = await user.create_encrypted_dm(bridge.bot_mxid)
    else:
        room = await user.create_dm(bridge.bot_mxid)
    await expect_notice(user, room, bridge.bot_mxid, "Send `help`")
    return room


async def email_login(bridge: HasBot, user: User, room: str, address: str, password: str,
                      *, imap: str, smtp: str, name: str = "-", expect: str = "Logged in as",
                      oauth_offered: bool = False) -> str:
    """Drive the email login flow; `imap`/`smtp` are host:port:security answers, `name` the
    sender name (`-`: the default, the Matrix display name). `oauth_offered`: the bridge knows an
    OAuth provider for the address; its sign-in link is answered with `password`."""
    bot = bridge.bot_mxid
    steps = [("Email address", address), ("Password", password), ("IMAP server", imap),
             ("SMTP server", smtp), ("Your name", name)]
    if oauth_offered:
        steps.insert(1, ("Sign in with", "password"))
    for prompt, answer in steps:
        if prompt == "Email address":
            await user.send_text(room, "login")
        await expect_notice(user, room, bot, prompt)
        await user.send_text(room, answer)
    return await expect_notice(user, room, bot, expect, timeout=30)
