"""Conversations with the bridge bot, shared by the end-to-end tests, the benchmarks and the demo."""

from __future__ import annotations

from typing import Protocol

from .matrix_client import MatrixTestClient


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


async def management_room(bridge: HasBot, user: MatrixTestClient) -> str:
    room = await user.create_dm(bridge.bot_mxid)
    await wait_notice(user, room, bridge.bot_mxid, "Send `help`")
    return room


async def email_login(bridge: HasBot, user: MatrixTestClient, room: str, address: str, password: str,
                      *, imap: str, smtp: str, name: str = "-", expect: str = "Logged in as") -> str:
    """Drive the email login flow; `imap`/`smtp` are host:port:security answers, `name` the
    sender name (`-`: the default, the Matrix display name)."""
    await user.send_text(room, "login")
    await wait_notice(user, room, bridge.bot_mxid, "Email address")
    await user.send_text(room, address)
    await wait_notice(user, room, bridge.bot_mxid, "Password")
    await user.send_text(room, password)
    await wait_notice(user, room, bridge.bot_mxid, "IMAP server")
    await user.send_text(room, imap)
    await wait_notice(user, room, bridge.bot_mxid, "SMTP server")
    await user.send_text(room, smtp)
    await wait_notice(user, room, bridge.bot_mxid, "Your name")
    await user.send_text(room, name)
    return (await wait_notice(user, room, bridge.bot_mxid, expect, timeout=30))[-1]
