"""Shared pieces of the email end-to-end tests: test mail, the login conversation, IMAP checks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
import imaplib
import re
import time

from devstack.bot_flows import HasBot, email_login, management_room
from devstack.dkim import DkimRig
from devstack.e2ee_client import E2EEUser
from devstack.matrix_client import Event, MatrixTestClient
from devstack.stack import MailStack


def servers(mail_stack: MailStack) -> dict[str, str]:
    return {"imap": f"127.0.0.1:{mail_stack.imap_port}:starttls",
            "smtp": f"127.0.0.1:{mail_stack.submission_port}:starttls"}


def mail(sender: str, to: list[str], subject: str, text: str, *, cc: list[str] | None = None,
         html: str | None = None, reply_to: EmailMessage | None = None,
         headers: dict[str, str] | None = None, date: datetime | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="example.org")
    if reply_to is not None:
        msg["In-Reply-To"] = reply_to["Message-ID"]
        msg["References"] = reply_to["Message-ID"]
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    return msg


def signed(rig: DkimRig, msg: EmailMessage) -> bytes:
    """`msg` DKIM-signed by the domain of its From address (the rig's DNS publishes the key)."""
    domain = str(msg["From"]).rpartition("@")[2].strip(" >")
    return rig.sign(msg.as_bytes(), domain)


async def logged_in(bridge: HasBot, user: MatrixTestClient | E2EEUser, mail_stack: MailStack,
                    mailbox: tuple[str, str]) -> str:
    """Log `user` in to `mailbox` through the bot; returns the management room."""
    room = await management_room(bridge, user)
    await email_login(bridge, user, room, *mailbox, **servers(mail_stack))
    return room


def by_body(text: str) -> Callable[[Event], bool]:
    return lambda e: e.get("type") == "m.room.message" and text in e["content"].get("body", "")


def wait_in_inbox(mail_stack: MailStack, address: str, count: int) -> None:
    """Block until `address`'s INBOX holds `count` mails (use while no bridge runs in-process)."""
    imap = mail_stack.imap_client(address)
    try:
        for _ in range(200):
            imap.select("INBOX")
            if len(imap.search(None, "ALL")[1][0].split()) >= count:
                return
            time.sleep(0.02)
        raise TimeoutError(f"{count} mails not in {address}'s INBOX")
    finally:
        imap.logout()


# ---------------------------------------------------------------- reading mailboxes over IMAP

@dataclass(slots=True)
class StoredMail:
    """One mail as the IMAP server holds it."""

    folder: str
    uid: int
    flags: set[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return BytesParser(policy=policy.default).parsebytes(self.raw)  # type: ignore[return-value]

    @property
    def message_id(self) -> str:
        return " ".join(str(self.message["Message-ID"] or "").split())


_FETCH_HEAD = re.compile(rb"UID (\d+).*FLAGS \(([^)]*)\)")


def special_use_folder(imap: imaplib.IMAP4, flag: str) -> str:
    status, lines = imap.list()
    assert status == "OK", lines
    for line in lines:
        text = line.decode() if isinstance(line, bytes) else str(line)
        attrs, _, name = text.partition(") ")
        if flag.lower() in attrs.lower():
            return name.split(" ", 1)[1].strip('"')
    raise AssertionError(f"no {flag} folder in {lines}")


def read_folder(mail_stack: MailStack, address: str, folder: str = "INBOX") -> list[StoredMail]:
    """Every mail in `folder` of `address` (a blocking call: run it in a thread)."""
    imap = mail_stack.imap_client(address)
    try:
        if folder.startswith("\\"):
            folder = special_use_folder(imap, folder)
        status, _ = imap.select(f'"{folder}"', readonly=True)
        assert status == "OK", f"cannot select {folder}"
        status, data = imap.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        mails = []
        for item in data:
            if not isinstance(item, tuple):
                continue
            head = _FETCH_HEAD.search(item[0])
            assert head, item[0]
            mails.append(StoredMail(folder, int(head.group(1)), set(head.group(2).decode().split()),
                                    item[1]))
        return mails
    finally:
        imap.logout()


async def mails_in(mail_stack: MailStack, address: str, folder: str = "INBOX") -> list[StoredMail]:
    return await asyncio.to_thread(read_folder, mail_stack, address, folder)


async def wait_for_mail(mail_stack: MailStack, address: str, pred: Callable[[StoredMail], bool],
                        *, folder: str = "INBOX", timeout: float = 15.0) -> StoredMail:
    """Poll `folder` of `address` until a mail matches `pred`."""
    deadline = time.monotonic() + timeout
    while True:
        mails = await mails_in(mail_stack, address, folder)
        found = next((m for m in mails if pred(m)), None)
        if found:
            return found
        if time.monotonic() > deadline:
            seen = [(m.message["Subject"], m.message_id) for m in mails]
            raise TimeoutError(f"no matching mail in {address}/{folder} within {timeout}s; there: {seen}")
        await asyncio.sleep(0.1)


def with_subject(subject: str) -> Callable[[StoredMail], bool]:
    return lambda m: m.message["Subject"] == subject


def with_message_id(message_id: str) -> Callable[[StoredMail], bool]:
    return lambda m: m.message_id == message_id
