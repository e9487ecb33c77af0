"""ImapOps (the outbound side's mailbox operations) against the real Dovecot (`mail_stack`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import re

import pytest

from bridge.connectors.email.imap import ImapAccount, ImapFolderError, ImapOps
from devstack.stack import MailStack

USER = "carol"


def _imap(stack: MailStack, *commands: tuple[str, ...]) -> list[tuple[str, list[object]]]:
    """Run imaplib commands (name, *args) in one session; returns their results."""
    client = stack.imap_client(USER)
    try:
        return [getattr(client, name)(*args) for name, *args in commands]
    finally:
        client.logout()


@pytest.fixture
async def ops(mail_stack: MailStack) -> AsyncIterator[ImapOps]:
    await asyncio.to_thread(mail_stack.empty_mailbox, USER)
    account = ImapAccount(
        mail_stack.host,
        mail_stack.imap_port,
        "starttls",
        mail_stack.address(USER),
        mail_stack.password(USER),
        str(mail_stack.ca_file),
        5.0,
    )
    try:
        yield ImapOps(account)
    finally:
        await asyncio.to_thread(mail_stack.empty_mailbox, USER)


def mail(mid: str, extra: str = "") -> bytes:
    return (
        f"From: carol@test.local\r\nTo: dave@test.local\r\nSubject: ops\r\n"
        f"Message-ID: {mid}\r\n{extra}\r\nHello.\r\n"
    ).encode()


async def test_append_goes_to_the_special_use_sent_folder(
    ops: ImapOps, mail_stack: MailStack
) -> None:
    result = await ops.append(mail("<sent-1@test.local>"))
    assert result.folder == "Sent" and result.uid is not None and result.uidvalidity is not None
    fetch = ("uid", "FETCH", str(result.uid), "(FLAGS BODY.PEEK[])")
    (_, _), (_, data) = await asyncio.to_thread(
        _imap, mail_stack, ("select", "Sent", True), fetch
    )
    meta = data[0][0].decode()  # type: ignore[index]
    assert "\\Seen" in meta
    assert b"Message-ID: <sent-1@test.local>" in data[0][1]  # type: ignore[index]


async def test_special_use_lookup_and_name_fallback(ops: ImapOps, mail_stack: MailStack) -> None:
    assert await ops.special_use_folder("\\Sent") == "Sent"
    assert await ops.special_use_folder("\\Trash") == "Trash"
    assert await ops.special_use_folder("\\Archive") is None
    with pytest.raises(ImapFolderError) as info:
        await ops.append(mail("<nowhere@test.local>"), folder_special_use="\\Archive")
    assert "no Archive folder" in info.value.reason
    # no folder carries \Archive, but one is named like it
    await asyncio.to_thread(_imap, mail_stack, ("create", "Archive"))
    result = await ops.append(mail("<arch@test.local>"), folder_special_use="\\Archive", flags=())
    assert result.folder == "Archive"
    assert await ops.find_uid_by_message_id("Archive", "<arch@test.local>") == result.uid


async def test_find_uid_by_message_id_is_exact(ops: ImapOps, mail_stack: MailStack) -> None:
    raws = [
        mail("<other@test.local>", "References: <wanted@test.local>\r\n"),
        mail("<wanted@test.local>"),
    ]
    await asyncio.to_thread(_imap, mail_stack, *[("append", "INBOX", "", None, r) for r in raws])
    (_, _), (_, data) = await asyncio.to_thread(
        _imap, mail_stack, ("select", "INBOX", True), ("uid", "SEARCH", "ALL")
    )
    first, second = (int(u) for u in data[0].split())  # type: ignore[union-attr]
    assert await ops.find_uid_by_message_id("INBOX", "<wanted@test.local>") == second
    assert await ops.find_uid_by_message_id("INBOX", " <other@test.local> ") == first
    assert await ops.find_uid_by_message_id("INBOX", "<wanted@test.loc") is None
    assert await ops.find_uid_by_message_id("INBOX", "<missing@test.local>") is None


async def test_set_seen_stores_only_what_is_unseen(ops: ImapOps, mail_stack: MailStack) -> None:
    raws = [mail(f"<unread-{n}@test.local>") for n in range(4)]
    await asyncio.to_thread(_imap, mail_stack, *[("append", "INBOX", "", None, r) for r in raws])
    uids = [await ops.find_uid_by_message_id("INBOX", f"<unread-{n}@test.local>") for n in range(4)]
    assert None not in uids
    first, second, third, fourth = (u for u in uids if u is not None)
    assert await ops.set_seen({"INBOX": [first]}) == 1
    gone = fourth + 100  # a UID no longer (or never) in the folder is ignored
    assert await ops.set_seen({"INBOX": [first, second, third, gone], "Sent": []}) == 2
    assert ["\\Seen" in await _flags(mail_stack, uid) for uid in uids] == [True, True, True, False]
    assert await ops.set_seen({"INBOX": [first, second]}) == 0  # idempotent


async def _flags(stack: MailStack, uid: int) -> str:
    (_, _), (_, data) = await asyncio.to_thread(
        _imap, stack, ("select", "INBOX", True), ("uid", "FETCH", str(uid), "(FLAGS)")
    )
    found = re.search(rb"FLAGS \(([^)]*)\)", data[0])  # type: ignore[arg-type]
    assert found is not None
    return found.group(1).decode().replace("\\Recent", "").strip()
