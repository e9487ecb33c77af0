"""Inbound mail end to end: Postfix -> Dovecot -> bridge (IMAP IDLE) -> Synapse -> a Matrix client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import json
import os
from pathlib import Path
import re
import struct
import subprocess
import sys
import time
import zlib

import pytest

from bridge.core.bridge import Bridge
from devstack.bot_flows import email_login, management_room, wait_notice
from devstack.dkim import DkimRig
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack
from tests.helpers.email_e2e import (
    by_body,
    logged_in,
    mail,
    mails_in,
    servers,
    signed,
    wait_in_inbox,
)
from tests.helpers.harness import start_bridge

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360"
    "000002000154a24f5d0000000049454e44ae426082"
)


async def test_mail_arrives_in_rooms_and_threads(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    dkim_rig: DkimRig,
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    await logged_in(email_bridge, user, mail_stack, mailbox)

    first = mail("Bob Example <bob@example.org>", [me], "Lunch on Friday?", "Shall we meet at noon?")
    mail_stack.deliver(signed(dkim_rig, first), [me], "bob@example.org")
    dm = await user.wait_for_room_invite(timeout=20)
    await user.join(dm)
    root = await user.wait_for_event(dm, by_body("Shall we meet at noon?"))
    ghost = email_bridge.ghosts.mxid("bob@example.org")
    assert root["sender"] == ghost
    assert "<strong>Lunch on Friday?</strong>" in root["content"]["formatted_body"]
    assert root["content"]["m.mentions"] == {}
    state = {(e["type"], e.get("state_key")): e["content"] for e in await user.room_state(dm)}
    assert state[("m.room.member", ghost)]["displayname"] == "Bob Example (bob@example.org)"

    reply = mail("Bob Example <bob@example.org>", [me], "Re: Lunch on Friday?",
                 "Or 1pm?\n\nOn Mon, Bob wrote:\n> Shall we meet at noon?\n", reply_to=first)
    mail_stack.deliver(reply.as_bytes(), [me], "bob@example.org")
    threaded = await user.wait_for_event(dm, by_body("Or 1pm?"))
    relation = threaded["content"]["m.relates_to"]
    assert relation["rel_type"] == "m.thread" and relation["event_id"] == root["event_id"]
    assert relation["m.in_reply_to"]["event_id"] == root["event_id"]

    html = ('<p>Plan <b>attached</b><img src="cid:logo@x"><img src="https://track.example/p.gif" '
            'width="1" height="1"><script>alert(1)</script></p>')
    rich = mail("Bob Example <bob@example.org>", [me], "Plans", "Plan attached", html=html)
    rich.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@x>")
    rich.add_attachment(b"%PDF-1.4 test\n", maintype="application", subtype="pdf", filename="plan v2.pdf")
    mail_stack.deliver(rich.as_bytes(), [me], "bob@example.org")
    text_event = await user.wait_for_event(dm, by_body("Plan attached"))
    formatted = text_event["content"]["formatted_body"]
    assert "<script" not in formatted and "track.example" not in formatted and "alert" not in formatted
    assert '<img src="mxc://' in formatted
    file_event = await user.wait_for_event(dm, lambda e: e["content"].get("body") == "plan v2.pdf")
    assert file_event["content"]["msgtype"] == "m.file"
    assert file_event["content"]["info"]["mimetype"] == "application/pdf"
    assert await user.download(file_event["content"]["url"]) == b"%PDF-1.4 test\n"

    group = mail("Bob Example <bob@example.org>", [me], "Team", "Hello both", cc=["Carol <carol@example.org>"])
    mail_stack.deliver(group.as_bytes(), [me], "bob@example.org")
    group_room = await user.wait_for_room_invite(timeout=20)
    await user.join(group_room)
    await user.wait_for_event(group_room, by_body("Hello both"))
    members = {(e["state_key"]) for e in await user.room_state(group_room) if e["type"] == "m.room.member"}
    assert {ghost, email_bridge.ghosts.mxid("carol@example.org")} <= members
    group_invite = [e for e in user.invites[group_room] if e["type"] == "m.room.member"
                    and e["state_key"] == user.user_id]
    assert not group_invite[0]["content"].get("is_direct")

    listed = mail("Dan <dan@example.org>", ["dev@lists.example.org"], "[dev] release", "Release is out",
                  headers={"List-Id": "Developers <dev.lists.example.org>"})
    mail_stack.deliver(listed.as_bytes(), [me], "dan@example.org")
    list_room = await user.wait_for_room_invite(timeout=20)
    await user.join(list_room)
    await user.wait_for_event(list_room, by_body("Release is out"))
    names = [e["content"].get("name") for e in await user.room_state(list_room) if e["type"] == "m.room.name"]
    assert (names and "Developers" in names[0]) or "dev.lists.example.org" in names[0]


def png(n: int) -> bytes:
    """A distinct, valid 1x1 PNG for each `n` (its pixel colour)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixel = zlib.compress(bytes([0, n % 256, n // 256, 7]))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixel) + chunk(b"IEND", b"")


async def test_every_file_of_a_mail_with_many_files_arrives_as_itself(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str]
) -> None:
    """Eleven and more files: the 11th must not get the 2nd's URL (`att10` is not `att1` + "0")."""
    user = await matrix_user()
    me = mailbox[0]
    await logged_in(email_bridge, user, mail_stack, mailbox)
    inline = {f"img{n}@many": png(n) for n in range(12)}
    html = "<p>Many pictures</p>" + "".join(f'<img src="cid:{cid}">' for cid in inline)
    many = mail("Gus <gus@example.org>", [me], "Many files", "Many pictures", html=html)
    related = many.get_payload()[1]
    for cid, data in inline.items():
        related.add_related(data, "image", "png", cid=f"<{cid}>")
    attached = {f"notes-{n}.txt": f"attachment number {n}\n".encode() for n in range(12)}
    for name, data in attached.items():
        many.add_attachment(data, maintype="text", subtype="plain", filename=name)
    mail_stack.deliver(many.as_bytes(), [me], "gus@example.org")
    dm = await user.wait_for_room_invite(timeout=20)
    await user.join(dm)

    text = await user.wait_for_event(dm, by_body("Many pictures"))
    sources = re.findall(r'<img src="([^"]+)"', text["content"]["formatted_body"])
    assert [await user.download(src) for src in sources] == list(inline.values())
    for name, data in attached.items():
        event = await user.wait_for_event(dm, lambda e, name=name: e["content"].get("body") == name)
        assert await user.download(event["content"]["url"]) == data, name


async def test_restart_catches_up_in_order_once(
    email_config: Path, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str]
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    bridge = await start_bridge(email_config, connector_name="email")
    try:
        await logged_in(bridge, user, mail_stack, mailbox)
        mail_stack.deliver(mail("Eve <eve@example.org>", [me], "One", "message 1").as_bytes(), [me], "eve@example.org")
        dm = await user.wait_for_room_invite(timeout=20)
        await user.join(dm)
        await user.wait_for_event(dm, by_body("message 1"))
    finally:
        await bridge.stop()
    for n in range(2, 7):
        # one at a time: Postfix delivers in parallel, and the mailbox order is what counts
        mail_stack.deliver(mail("Eve <eve@example.org>", [me], f"#{n}", f"message {n}").as_bytes(), [me],
                           "eve@example.org")
        wait_in_inbox(mail_stack, me, n)
    bridge = await start_bridge(email_config, connector_name="email")
    try:
        await user.wait_for_event(dm, by_body("message 6"), timeout=30)
        mail_stack.deliver(mail("Eve <eve@example.org>", [me], "#7", "message 7").as_bytes(), [me], "eve@example.org")
        await user.wait_for_event(dm, by_body("message 7"), timeout=20)
    finally:
        await bridge.stop()
    bodies = [e["content"]["body"] for e in user.messages(dm, bridge.ghosts.mxid("eve@example.org"))]
    numbered = [b.splitlines()[-1] for b in bodies if "message " in b]
    assert numbered == [f"message {n}" for n in range(1, 8)], bodies


async def test_login_errors_are_specific(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str],
    bridge_setups: dict, tmp_path: Path,
) -> None:
    user = await matrix_user()
    room = await management_room(email_bridge, user)
    address, password = mailbox
    await email_login(email_bridge, user, room, address, "wrong-password", **servers(mail_stack),
                      expect="Login failed")
    notice = (await wait_notice(user, room, email_bridge.bot_mxid, "Login failed"))[-1]
    assert "IMAP" in notice and "password" in notice.lower()
    # the flow asks for the password again, keeping the servers
    await wait_notice(user, room, email_bridge.bot_mxid, "Password", count=2)
    await user.send_text(room, "cancel")
    await wait_notice(user, room, email_bridge.bot_mxid, "Login cancelled")

    from devstack.ports import free_port
    closed = free_port()
    await email_login(email_bridge, user, room, address, password,
                      imap=f"127.0.0.1:{closed}:starttls", smtp=f"127.0.0.1:{closed}:starttls",
                      expect="Login failed")
    notice = (await wait_notice(user, room, email_bridge.bot_mxid, "Login failed", count=2))[-1]
    assert "reach" in notice.lower() or "connect" in notice.lower(), notice
    await user.send_text(room, "cancel")
    await wait_notice(user, room, email_bridge.bot_mxid, "Login cancelled", count=2)
    assert await email_bridge.logins_table.for_user(user.user_id) == []


def append(mail_stack: MailStack, address: str, folder: str, raw: bytes) -> None:
    imap = mail_stack.imap_client(address)
    try:
        status, _ = imap.append(folder, "(\\Seen)", None, raw)
        assert status == "OK"
    finally:
        imap.logout()


def stored_message(mail_stack: MailStack, address: str, subject: str) -> bytes:
    """The exact bytes the server stored (Postfix adds Received:, Return-Path: ...)."""
    imap = mail_stack.imap_client(address)
    try:
        imap.select("INBOX", readonly=True)
        uid = imap.uid("SEARCH", "SUBJECT", subject)[1][0].split()[-1]
        data = imap.uid("FETCH", uid, "(BODY.PEEK[])")[1]
        return bytes(data[0][1])
    finally:
        imap.logout()


async def wait_checkpoint(bridge: Bridge, folder: str, uid: int, timeout: float = 15.0) -> None:
    """Until the bridge's sync of `folder` has handled everything up to `uid`."""
    deadline = time.monotonic() + timeout
    while True:
        last = await bridge.connector_db.fetchval(
            "SELECT last_uid FROM email_folder_checkpoint WHERE folder=$1", folder)
        if last is not None and last >= uid:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bridge did not sync {folder} up to UID {uid} (at {last})")
        await asyncio.sleep(0.05)


def nested(depth: int) -> bytes:
    parts = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    closing = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(depth)))
    return (f"From: Mallory <mallory@example.org>\r\nTo: you@test.local\r\nSubject: deep\r\n"
            f"Message-ID: <deep-{depth}@example.org>\r\nMIME-Version: 1.0\r\n{parts}"
            f"Content-Type: text/plain\r\n\r\nbottom{closing}").encode()


async def test_own_mail_duplicates_and_broken_mail(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack, mailbox: tuple[str, str]
) -> None:
    user = await matrix_user()
    me = mailbox[0]
    await logged_in(email_bridge, user, mail_stack, mailbox)

    # Written in another mail client: found in Sent, posted by the ghost of one's own address.
    own = mail(f"Me <{me}>", ["Frank <frank@example.org>"], "From my phone", "Sent from elsewhere")
    append(mail_stack, me, "Sent", own.as_bytes())
    dm = await user.wait_for_room_invite(timeout=20)
    await user.join(dm)
    event = await user.wait_for_event(dm, by_body("Sent from elsewhere"))
    assert event["sender"] == email_bridge.ghosts.mxid(me)

    # The same Message-ID in two folders is one event.
    twice = mail("Frank <frank@example.org>", [me], "Copy", "only once please")
    append(mail_stack, me, "Sent", twice.as_bytes())
    mail_stack.deliver(twice.as_bytes(), [me], "frank@example.org")
    await user.wait_for_event(dm, by_body("only once please"))
    marker = mail("Frank <frank@example.org>", [me], "Later", "after the copies")
    mail_stack.deliver(marker.as_bytes(), [me], "frank@example.org")
    await user.wait_for_event(dm, by_body("after the copies"))
    # Both copies handled: the one in Sent too (its folder checkpoint passed it).
    copy = next(m for m in await mails_in(mail_stack, me, "Sent") if m.message_id == twice["Message-ID"])
    await wait_checkpoint(email_bridge, "Sent", copy.uid)
    await user.sync_once(timeout_ms=0)
    assert len([e for e in user.messages(dm) if "only once please" in e["content"].get("body", "")]) == 1

    # A mail that breaks a cap becomes a notice with the raw message attached; later mail flows.
    mail_stack.deliver(nested(40), [me], "mallory@example.org")
    errors = await user.wait_for_room_invite(timeout=20)
    await user.join(errors)
    notice = await user.wait_for_event(errors, lambda e: e["content"].get("msgtype") == "m.notice")
    assert "nest" in notice["content"]["body"].lower()
    raw = await user.wait_for_event(errors, lambda e: e["content"].get("msgtype") == "m.file")
    assert await user.download(raw["content"]["url"]) == stored_message(mail_stack, me, "deep")
    after = mail("Frank <frank@example.org>", [me], "Still here", "the queue still flows")
    mail_stack.deliver(after.as_bytes(), [me], "frank@example.org")
    await user.wait_for_event(dm, by_body("the queue still flows"))


def test_preview_command_prints_events(tmp_path: Path) -> None:
    """`python -m bridge preview FILE.eml --json` works without any server."""
    sample = Path(__file__).parent / "corpus" / "inline"
    eml = sorted(sample.glob("*.eml"))[0]
    result = subprocess.run([sys.executable, "-m", "bridge", "preview", str(eml), "--json"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)
    assert events and {"type", "content", "sender", "thread_root", "reply_to", "attachments"} <= events[0].keys()
    bad = subprocess.run([sys.executable, "-m", "bridge", "preview", str(tmp_path / "missing.eml"), "--json"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert bad.returncode != 0 and "missing.eml" in bad.stderr
