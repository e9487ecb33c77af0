"""Reading what arrived: a room's whole history, a mailbox folder's tokens."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import sqlite3
import time
from typing import Any
from urllib.parse import quote

import asyncpg

from bridge.connectors.email.db import OutboxState
from devstack.matrix_client import Event, MatrixTestClient
from devstack.stack import MailStack
from tests.helpers.email_e2e import StoredMail, read_folder

from .ledger import Tokens

MAX_PAGES = 200  # 200 pages of 500 events: far more than any scenario posts


async def room_history(user: MatrixTestClient, room: str) -> list[Event]:
    """Every event of `room` the user can see, oldest first (`/messages`, forwards)."""
    events: list[Event] = []
    token: str | None = None
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {"dir": "f", "limit": "500"}
        if token:
            params["from"] = token
        data = await user.request("GET", f"/rooms/{quote(room)}/messages", **params)
        chunk = data.get("chunk", [])
        events.extend(chunk)
        token = data.get("end")
        if not chunk or not token:
            return events
    raise RuntimeError(f"{room} has more than {MAX_PAGES} pages of history")


def is_file(event: Event) -> bool:
    return event.get("type") == "m.room.message" and event["content"].get("msgtype") in (
        "m.file", "m.image", "m.video", "m.audio")


def text_tokens(events: list[Event], tokens: Tokens, kind: str = "ft") -> list[str]:
    """Tokens in the bodies of the room's message events that are not files, in room order."""
    found: list[str] = []
    for event in events:
        if event.get("type") == "m.room.message" and not is_file(event):
            found.extend(tokens.found_in(str(event["content"].get("body", "")), kind))
    return found


def file_tokens(events: list[Event], tokens: Tokens) -> list[str]:
    """Tokens in the names of the room's file events (uploaded, with a URL), in room order."""
    return [t for e in events if is_file(e) and e["content"].get("url")
            for t in tokens.found_in(str(e["content"].get("body", "")), "att")]


async def wait_for_text(user: MatrixTestClient, room: str, text: str, timeout: float) -> Event:
    """The first message event in `room` whose body contains `text` (incremental /sync);
    connection errors while the homeserver restarts are retried until the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        for event in user.timeline.get(room, []):
            if event.get("type") == "m.room.message" and text in event["content"].get("body", ""):
                return event
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} did not arrive in {room} within {timeout:.0f} s")
        try:
            await user.sync_once(timeout_ms=1000)
        except Exception:
            await asyncio.sleep(0.5)


@dataclass(frozen=True, slots=True)
class MailCopy:
    """One mail in a folder: its UID, Message-ID and the tokens in its text."""

    uid: int
    message_id: str
    tokens: list[str]


def _text_of(mail: StoredMail) -> str:
    message = mail.message
    part = message.get_body(("plain", "html"))
    return str(part.get_content()) if part is not None else ""


def folder_copies(mail_stack: MailStack, address: str, folder: str, tokens: Tokens,
                  kind: str = "ft") -> list[MailCopy]:
    """The mails of `folder` that carry this run's tokens, in UID order (blocking: use a thread)."""
    copies = [MailCopy(m.uid, m.message_id, tokens.found_in(_text_of(m), kind))
              for m in read_folder(mail_stack, address, folder)]
    return sorted((c for c in copies if c.tokens), key=lambda c: c.uid)


async def wait_for_mail_token(mail_stack: MailStack, address: str, folder: str, tokens: Tokens,
                              token: str, kind: str, timeout: float) -> list[MailCopy]:
    """Poll `folder` until a mail with `token` is there; returns the folder's copies."""
    deadline = time.monotonic() + timeout
    while True:
        copies = await asyncio.to_thread(folder_copies, mail_stack, address, folder, tokens, kind)
        if any(token in c.tokens for c in copies):
            return copies
        if time.monotonic() > deadline:
            raise TimeoutError(f"{token} not in {address}/{folder} within {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def inbox_uids(mail_stack: MailStack, address: str, tokens: Tokens, count: int,
                     timeout: float) -> list[str]:
    """The first `count` tokens of this run in `address`'s INBOX, in UID order, once all are
    there (the order in which the bridge must post them)."""
    deadline = time.monotonic() + timeout
    wanted = set(tokens.texts(count))
    while True:
        copies = await asyncio.to_thread(folder_copies, mail_stack, address, "INBOX", tokens)
        order = [t for c in copies for t in c.tokens if t in wanted]
        if set(order) >= wanted:
            return list(dict.fromkeys(order))
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(set(order))} of {count} mails reached {address}")
        await asyncio.sleep(0.2)


def _sending_sqlite(path: str, state: str) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT message_id FROM email_outbox WHERE state = ?", (state,))
        return {str(r[0]) for r in rows}
    finally:
        conn.close()


async def mails_being_sent(db_url: str) -> set[str]:
    """Message-IDs of the outbox rows the bridge had not recorded as sent or failed when it
    died (state `sending`): read from its database while it is down."""
    state = OutboxState.SENDING.value
    if db_url.startswith("sqlite:"):
        return await asyncio.to_thread(_sending_sqlite, db_url.removeprefix("sqlite:"), state)
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        rows = await conn.fetch("SELECT message_id FROM email_outbox WHERE state = $1", state)
        return {str(r["message_id"]) for r in rows}
    finally:
        await conn.close()
