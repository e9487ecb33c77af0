"""Outbound mail end to end: a Matrix client -> Synapse -> bridge -> Postfix (submission) -> Dovecot.

Every check reads the real mailboxes over IMAP, on both database backends. The rule for where a
Matrix message goes is send.py's: a reply to a mail answers that mail, a message in a thread the
thread's latest mail; a top-level message continues the most recent mail of the room; in a room without mail (after
`start-chat`) it starts a new thread whose subject is an explicit first line `Subject: ...` or
else the first line of the message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
import time
from typing import Any
from urllib.parse import quote
import uuid

import pytest

from bridge.connectors.email.outbound import is_message_id_for_event
from bridge.core.bridge import Bridge
from devstack.bot_flows import wait_notice
from devstack.matrix_client import Event, MatrixTestClient
from devstack.stack import MailStack, Synapse
from tests.helpers.bridge_process import BridgeProcess
from tests.helpers.email_e2e import (
    HasBot,
    StoredMail,
    by_body,
    logged_in,
    mail,
    mails_in,
    wait_for_mail,
    with_subject,
)
from tests.helpers.harness import BridgeSetup, start_bridge

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]
SEND_STATUS = "com.beeper.message_send_status"


@pytest.fixture
async def email_bridge_with(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, mail_stack: MailStack,
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[Bridge]]]:
    """`await email_bridge_with(**options)`: an email bridge like `email_bridge`, with some
    `network.email` options changed (keys as in the config, e.g. `outbound.max_recipients`)."""
    started: list[Bridge] = []

    async def start(**options: Any) -> Bridge:
        network = {"ca_file": str(mail_stack.ca_file), "imap.poll_interval": 1,
                   "outbound.retry_schedule": [1, 2, 30], **options}
        config = bridge_setups["email"].config_for(tmp_path.name, hs_url=synapse.hs_url,
                                                   db_url=db_url, network=network)
        started.append(await start_bridge(config, connector_name="email"))
        return started[-1]

    yield start
    for bridge in started:
        await bridge.stop()


@dataclass(frozen=True, slots=True)
class People:
    """Correspondents' mailboxes, shared by the tests of this module: every check of their
    mail picks it by Message-ID (the Matrix event it was made from)."""

    bob: str
    carol: str
    dave: str


@pytest.fixture(scope="module")
def people(mail_stack: MailStack) -> People:
    return People(*(mail_stack.add_user(f"{name}{uuid.uuid4().hex[:8]}", f"pw-{name}-secret")
                    for name in ("bob", "carol", "dave")))


@pytest.fixture
def blocks(mail_stack: MailStack) -> Iterator[MailStack]:
    """The stack's recipient blocks, always lifted after the test."""
    yield mail_stack
    mail_stack.clear_recipient_blocks()


def in_thread(root_event: str) -> dict[str, Any]:
    return {"rel_type": "m.thread", "event_id": root_event, "is_falling_back": True,
            "m.in_reply_to": {"event_id": root_event}}


def for_event(event_id: str) -> Callable[[StoredMail], bool]:
    """The mail made from a Matrix event (its Message-ID is derived from the event ID)."""
    return lambda m: is_message_id_for_event(m.message_id, event_id)


def addresses(m: StoredMail, header: str) -> list[str]:
    value = m.message[header]
    return [a.addr_spec for a in value.addresses] if value is not None else []


def plain_text(m: StoredMail) -> str:
    part = m.message.get_body(("plain",))
    assert part is not None, m.raw[:2000]
    return str(part.get_content())


async def wait_status(user: MatrixTestClient, room: str, event_id: str, status: str,
                      timeout: float = 15.0) -> Event:
    """The bridge's `com.beeper.message_send_status` event for `event_id` with `status`."""
    def find() -> Event | None:
        for e in user.timeline.get(room, []):
            content = e.get("content", {})
            if (e.get("type") == SEND_STATUS and content.get("status") == status
                    and content.get("m.relates_to", {}).get("event_id") == event_id):
                return e
        return None

    def describe() -> str:
        return str([e["content"] for e in user.timeline.get(room, []) if e.get("type") == SEND_STATUS])
    return await user.wait_for(find, timeout, describe)


async def wait_reply_notice(user: MatrixTestClient, room: str, bot: str, event_id: str, text: str,
                            timeout: float = 15.0) -> str:
    """The body of a bot notice that replies to `event_id` and contains `text`."""
    def find() -> str | None:
        for e in user.messages(room, bot):
            content = e["content"]
            reply = (content.get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id")
            if content.get("msgtype") == "m.notice" and reply == event_id and text in content["body"]:
                return str(content["body"])
        return None
    return await user.wait_for(find, timeout, lambda: str([
        e["content"].get("body") for e in user.messages(room, bot)]))


async def wait_synced_from(bridge: Bridge, stored: StoredMail, timeout: float = 10.0) -> None:
    """Wait until the bridge's IMAP sync has handled `stored` in its folder (the mail index
    then records that folder and UID for its Message-ID)."""
    deadline = time.monotonic() + timeout
    while True:
        row = await bridge.connector_db.fetchrow(
            "SELECT folder, uid FROM email_mail WHERE message_id=$1", stored.message_id)
        if row and (row["folder"], row["uid"]) == (stored.folder, stored.uid):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bridge did not sync {stored.message_id} in {stored.folder}: {row}")
        await asyncio.sleep(0.1)


async def assert_no_echo(bridge: Bridge, user: MatrixTestClient, room: str, me: str) -> None:
    """Nothing in `room` from the ghost of the user's own address (a sent mail posted back)."""
    await user.sync_once(timeout_ms=0)
    own_ghost = bridge.ghosts.mxid(me)
    assert [e["content"] for e in user.timeline[room] if e.get("sender") == own_ghost] == []


async def receive_first_mail(user: MatrixTestClient, mail_stack: MailStack, me: str, sender: str,
                             subject: str, text: str, **kw: Any) -> tuple[str, Event, Any]:
    """Deliver a mail to `me`; returns (room, the Matrix event of the mail, the mail)."""
    original = mail(sender, [me], subject, text, **kw)
    mail_stack.deliver(original.as_bytes(), [me], sender)
    room = await user.wait_for_room_invite(timeout=20)
    await user.join(room)
    return room, await user.wait_for_event(room, by_body(text), timeout=20), original


async def start_chat(bridge: HasBot, user: MatrixTestClient, management: str, address: str) -> str:
    await user.send_text(management, f"start-chat {address}")
    await wait_notice(user, management, bridge.bot_mxid, f"Created a chat with {address}")
    room = await user.wait_for_room_invite(timeout=20)
    await user.join(room)
    return room


async def test_reply_and_attachment_reach_the_correspondent_and_are_filed_in_sent(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], people: People,
) -> None:
    user = await matrix_user()
    me, bob = mailbox[0], people.bob
    await logged_in(email_bridge, user, mail_stack, mailbox)
    dm, root, original = await receive_first_mail(
        user, mail_stack, me, f"Bob <{bob}>", "Project plan", "Can you review the plan?")

    reply_event = await user.send(dm, {
        "msgtype": "m.text", "body": "Looks **good** to me",
        "format": "org.matrix.custom.html", "formatted_body": "<p>Looks <strong>good</strong> to me</p>",
        "m.relates_to": in_thread(root["event_id"]),
    })
    got = await wait_for_mail(mail_stack, bob, for_event(reply_event))
    msg = got.message
    assert addresses(got, "From") == [me]
    assert addresses(got, "To") == [bob]
    assert msg["Subject"] == "Re: Project plan"
    assert msg["In-Reply-To"] == original["Message-ID"]
    assert original["Message-ID"] in str(msg["References"]).split()
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert "Looks" in plain_text(got) and "good" in plain_text(got)
    assert "<strong>good</strong>" in str(msg.get_body(("html",)).get_content())
    await wait_status(user, dm, reply_event, "SUCCESS")

    data = bytes(range(256)) * 20 + b"%%EOF\n"
    mxc = await user.upload(data, "application/pdf", "Q3 report.pdf")
    file_event = await user.send(dm, {
        "msgtype": "m.file", "body": "Q3 report.pdf", "filename": "Q3 report.pdf", "url": mxc,
        "info": {"mimetype": "application/pdf", "size": len(data)},
        "m.relates_to": in_thread(root["event_id"]),
    })
    reply_id = got.message_id
    got = await wait_for_mail(mail_stack, bob, for_event(file_event))
    assert got.message["Subject"] == "Re: Project plan"
    assert got.message["In-Reply-To"] == reply_id  # the thread's latest mail
    attachments = list(got.message.iter_attachments())
    assert len(attachments) == 1
    assert attachments[0].get_filename() == "Q3 report.pdf"
    assert attachments[0].get_content_type() == "application/pdf"
    assert attachments[0].get_content() == data

    # Both are filed in the bridged account's Sent folder (found by its \Sent attribute).
    sent = await wait_for_mail(mail_stack, me, for_event(reply_event), folder="\\Sent")
    assert "\\Seen" in sent.flags
    assert addresses(sent, "To") == [bob]
    filed = await wait_for_mail(mail_stack, me, for_event(file_event), folder="\\Sent")
    # The Sent folder is synced (client.connect adds it): once the bridge has seen these copies
    # there, they must have been recognised by their Message-ID, not posted again.
    await wait_synced_from(email_bridge, sent)
    await wait_synced_from(email_bridge, filed)
    await assert_no_echo(email_bridge, user, dm, me)
    assert [e["sender"] for e in user.timeline[dm] if by_body("Looks **good**")(e)] == [user.user_id]


def in_thread_after(root_event: str, latest_event: str) -> dict[str, Any]:
    """A thread reply as clients send it: the fallback reply points at the thread's latest event."""
    return {"rel_type": "m.thread", "event_id": root_event, "is_falling_back": True,
            "m.in_reply_to": {"event_id": latest_event}}


def answer(sender: str, to: str, subject: str, text: str, *, in_reply_to: str,
           references: list[str]) -> Any:
    reply = mail(sender, [to], subject, text)
    reply["In-Reply-To"] = in_reply_to
    reply["References"] = " ".join(references)
    return reply


async def test_thread_reply_answers_the_latest_mail_with_the_whole_chain(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], people: People,
) -> None:
    user = await matrix_user()
    me, bob = mailbox[0], people.bob
    await logged_in(email_bridge, user, mail_stack, mailbox)
    dm, root, original = await receive_first_mail(user, mail_stack, me, bob, "Roadmap", "Q1 or Q2?")
    first = await user.send_text(dm, "Q2", **{"m.relates_to": in_thread(root["event_id"])})
    first_mail = await wait_for_mail(mail_stack, bob, for_event(first))
    chain = [original["Message-ID"], first_mail.message_id]
    second = answer(bob, me, "Re: Roadmap", "Q2 it is, which week?", in_reply_to=chain[-1],
                    references=chain)
    mail_stack.deliver(second.as_bytes(), [me], bob)
    latest = await user.wait_for_event(dm, by_body("which week?"))

    reply = await user.send_text(dm, "The first week",
                                 **{"m.relates_to": in_thread_after(root["event_id"], latest["event_id"])})
    got = await wait_for_mail(mail_stack, bob, for_event(reply))
    assert got.message["In-Reply-To"] == second["Message-ID"]
    assert str(got.message["References"]).split() == [*chain, second["Message-ID"]]


async def test_thread_reply_keeps_the_root_when_the_correspondent_dropped_it(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], people: People,
) -> None:
    """Some clients send only In-Reply-To (or cut References): the answer still names the root."""
    user = await matrix_user()
    me, bob = mailbox[0], people.bob
    await logged_in(email_bridge, user, mail_stack, mailbox)
    dm, root, original = await receive_first_mail(user, mail_stack, me, bob, "Budget", "Is 5k ok?")
    first = await user.send_text(dm, "Make it 6k", **{"m.relates_to": in_thread(root["event_id"])})
    first_mail = await wait_for_mail(mail_stack, bob, for_event(first))
    second = answer(bob, me, "Re: Budget", "6k approved, when do you start?",
                    in_reply_to=first_mail.message_id, references=[first_mail.message_id])
    mail_stack.deliver(second.as_bytes(), [me], bob)
    latest = await user.wait_for_event(dm, by_body("when do you start?"))
    assert latest["content"]["m.relates_to"]["event_id"] == root["event_id"]

    reply = await user.send_text(dm, "Monday",
                                 **{"m.relates_to": in_thread_after(root["event_id"], latest["event_id"])})
    got = await wait_for_mail(mail_stack, bob, for_event(reply))
    assert got.message["In-Reply-To"] == second["Message-ID"]
    assert str(got.message["References"]).split() == [
        original["Message-ID"], first_mail.message_id, second["Message-ID"]]


async def test_top_level_message_continues_latest_thread_and_start_chat_starts_one(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], people: People,
) -> None:
    user = await matrix_user()
    me, bob, carol, dave = mailbox[0], people.bob, people.carol, people.dave
    management = await logged_in(email_bridge, user, mail_stack, mailbox)
    now = datetime.now(UTC)
    dm, _, first = await receive_first_mail(user, mail_stack, me, bob, "Topic one", "first topic",
                                            date=now - timedelta(minutes=2))
    second = mail(bob, [me], "Topic two", "second topic", date=now - timedelta(minutes=1))
    mail_stack.deliver(second.as_bytes(), [me], bob)
    await user.wait_for_event(dm, by_body("second topic"), timeout=20)

    top = await user.send_text(dm, "An answer without a thread")
    got = await wait_for_mail(mail_stack, bob, for_event(top))
    assert got.message["Subject"] == "Re: Topic two"
    assert got.message["In-Reply-To"] == second["Message-ID"]
    assert first["Message-ID"] not in str(got.message["References"])

    room = await start_chat(email_bridge, user, management, carol)
    hello = await user.send_text(room, "Subject: Hello\nNice to meet you.")
    got = await wait_for_mail(mail_stack, carol, for_event(hello))
    assert got.message["Subject"] == "Hello"
    assert addresses(got, "To") == [carol]
    assert got.message["In-Reply-To"] is None and got.message["References"] is None
    assert plain_text(got).strip() == "Nice to meet you."
    follow = await user.send_text(room, "One more thing")
    got_follow = await wait_for_mail(mail_stack, carol, for_event(follow))
    assert got_follow.message["Subject"] == "Re: Hello"
    assert got_follow.message["In-Reply-To"] == got.message_id
    # Without a `Subject:` line, the first line is the subject (and stays in the body).
    room = await start_chat(email_bridge, user, management, dave)
    plain = await user.send_text(room, "Quick question\nIs the office open on Monday?")
    got = await wait_for_mail(mail_stack, dave, for_event(plain))
    assert got.message["Subject"] == "Quick question"
    assert plain_text(got).splitlines()[:2] == ["Quick question", "Is the office open on Monday?"]


async def test_deferred_mail_is_retried_and_refused_mail_is_reported(
    email_bridge_with: Callable[..., Awaitable[Bridge]], matrix_user: MakeUser, blocks: MailStack,
    mailbox: tuple[str, str], people: People,
) -> None:
    mail_stack = blocks
    # Retries every second, so the attempts cannot run out before the block is lifted.
    email_bridge = await email_bridge_with(**{"outbound.retry_schedule": [1] * 20})
    user = await matrix_user()
    bob = people.bob
    management = await logged_in(email_bridge, user, mail_stack, mailbox)
    room = await start_chat(email_bridge, user, management, bob)

    mail_stack.set_recipient_block(bob, "450 4.2.0 try later")
    deferred = await user.send_text(room, "Subject: Deferred\nPlease wait for me")
    pending = await wait_status(user, room, deferred, "PENDING")
    assert "will retry" in pending["content"]["message"] and "450" in pending["content"]["message"]
    assert not any(for_event(deferred)(m) for m in await mails_in(mail_stack, bob))
    mail_stack.clear_recipient_blocks()
    got = await wait_for_mail(mail_stack, bob, for_event(deferred))
    assert got.message["Subject"] == "Deferred"
    await wait_status(user, room, deferred, "SUCCESS")

    mail_stack.set_recipient_block(bob, "550 5.1.1 no such user")
    refused = await user.send_text(room, "This one bounces")
    failed = await wait_status(user, room, refused, "FAIL_PERMANENT")
    assert "no such user" in failed["content"]["message"]
    notice = await wait_reply_notice(user, room, email_bridge.bot_mxid, refused, "no such user")
    assert "550" in notice, notice


async def sent_after(user: MatrixTestClient, room: str, mail_stack: MailStack, to: str,
                     text: str) -> None:
    """Send `text` in `room` and wait until it reached `to`: the outbox sends a room's mail in
    order, so a copy of an earlier mail that was still to go out would have gone before it."""
    marker = await user.send_text(room, text)
    await wait_for_mail(mail_stack, to, for_event(marker), timeout=30)


async def test_outbox_survives_a_killed_bridge(
    email_config: Path, matrix_user: MakeUser, blocks: MailStack, mailbox: tuple[str, str],
    people: People, tmp_path: Path,
) -> None:
    """A mail queued in the outbox is sent exactly once across `kill -9` and restarts.

    What "mid-send" covers here: the process is killed while the mail sits in the outbox between
    attempts (the server answered 450, the row is `queued` with a retry time), and the restart
    sends it from the stored bytes. A kill while a row is `sending` is handled the same way (the
    restart picks `sending` rows up again). Not covered, because no test can aim at it: a kill in
    the few milliseconds between the server's 250 reply to the end of DATA and the database update
    to `sent`. The restart then sends the mail a second time (at-least-once); the copy carries the
    same Message-ID, so mail clients that deduplicate show it once.
    """
    mail_stack = blocks
    user = await matrix_user()
    me, bob = mailbox[0], people.bob
    bridge = BridgeProcess(email_config, tmp_path / "bridge.log")
    try:
        bridge.start()
        management = await logged_in(bridge, user, mail_stack, mailbox)
        room = await start_chat(bridge, user, management, bob)
        mail_stack.set_recipient_block(bob, "450 4.2.0 try later")
        queued = await user.send_text(room, "Subject: Survivor\nStill here after the crash")
        await wait_status(user, room, queued, "PENDING")
        bridge.kill()
        mail_stack.clear_recipient_blocks()
        assert not any(for_event(queued)(m) for m in await mails_in(mail_stack, bob))
        bridge.start()
        got = await wait_for_mail(mail_stack, bob, for_event(queued), timeout=30)
        assert got.message["Subject"] == "Survivor"
        await wait_status(user, room, queued, "SUCCESS", timeout=30)
        await sent_after(user, room, mail_stack, bob, "first marker")
        assert len([m for m in await mails_in(mail_stack, bob) if for_event(queued)(m)]) == 1

        bridge.stop()
        bridge.start()
        # A mail from bob that shows up in Matrix proves the restarted login is connected, and
        # its outbox (started right after the IMAP sync) has looked at its queue.
        ping = mail(bob, [me], "After the restart", "are you back?")
        mail_stack.deliver(ping.as_bytes(), [me], bob)
        await user.wait_for_event(room, by_body("are you back?"), timeout=30)
        await sent_after(user, room, mail_stack, bob, "second marker")
        assert len([m for m in await mails_in(mail_stack, bob) if for_event(queued)(m)]) == 1
    finally:
        bridge.kill()


async def test_read_receipt_redaction_and_edit(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], people: People,
) -> None:
    user = await matrix_user()
    me, bob = mailbox[0], people.bob
    await logged_in(email_bridge, user, mail_stack, mailbox)
    dm, root, _original = await receive_first_mail(user, mail_stack, me, bob, "Meeting", "At 10?")
    (stored,) = await mails_in(mail_stack, me)
    assert "\\Seen" not in stored.flags
    await user.request("POST", f"/rooms/{quote(dm)}/receipt/m.read/{quote(root['event_id'])}", {})
    await wait_for_mail(mail_stack, me, lambda m: m.uid == stored.uid and "\\Seen" in m.flags)

    sent = await user.send_text(dm, "See you at 10", **{"m.relates_to": in_thread(root["event_id"])})
    got = await wait_for_mail(mail_stack, bob, for_event(sent))
    await wait_status(user, dm, sent, "SUCCESS")

    edit = await user.send(dm, {
        "msgtype": "m.text", "body": "* See you at 11",
        "m.new_content": {"msgtype": "m.text", "body": "See you at 11"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": sent},
    })
    correction = await wait_for_mail(mail_stack, bob, for_event(edit))
    assert "Correction" in plain_text(correction) and "See you at 11" in plain_text(correction)
    assert correction.message["In-Reply-To"] == got.message_id
    assert correction.message["Subject"] == "Re: Meeting"
    # The correction is filed in Sent like any sent mail, and its copy there is no new message.
    filed = await wait_for_mail(mail_stack, me, for_event(edit), folder="\\Sent")
    await wait_synced_from(email_bridge, filed)
    await assert_no_echo(email_bridge, user, dm, me)

    await user.request("PUT", f"/rooms/{quote(dm)}/redact/{quote(sent)}/{uuid.uuid4().hex}", {})
    notice = await wait_reply_notice(user, dm, email_bridge.bot_mxid, sent, "cannot be unsent")
    assert "recipients' mailboxes" in notice
    assert len([m for m in await mails_in(mail_stack, bob) if for_event(sent)(m)]) == 1


async def test_read_receipt_marks_everything_up_to_it_read(
    email_bridge: Bridge, matrix_user: MakeUser, mail_stack: MailStack,
    mailbox: tuple[str, str], people: People,
) -> None:
    user = await matrix_user()
    me, bob, carol = mailbox[0], people.bob, people.carol
    await logged_in(email_bridge, user, mail_stack, mailbox)
    now = datetime.now(UTC)
    dm, _, first = await receive_first_mail(user, mail_stack, me, bob, "Monday", "See you Monday",
                                            date=now - timedelta(minutes=3))
    _, _, other = await receive_first_mail(user, mail_stack, me, carol, "Elsewhere",
                                           "Another room", date=now - timedelta(minutes=2))
    second = mail(bob, [me], "Tuesday", "And Tuesday?", date=now - timedelta(minutes=1))
    mail_stack.deliver(second.as_bytes(), [me], bob)
    read = await user.wait_for_event(dm, by_body("And Tuesday?"))
    third = mail(bob, [me], "Wednesday", "Wednesday too", date=now)
    mail_stack.deliver(third.as_bytes(), [me], bob)
    await user.wait_for_event(dm, by_body("Wednesday too"))

    await user.request("POST", f"/rooms/{quote(dm)}/receipt/m.read/{quote(read['event_id'])}", {})
    # One UID STORE sets every flag: once the first mail is seen, the others are settled too.
    await wait_for_mail(mail_stack, me, lambda m: m.message_id == first["Message-ID"] and "\\Seen" in m.flags)
    seen = {m.message_id: "\\Seen" in m.flags for m in await mails_in(mail_stack, me)}
    assert seen == {first["Message-ID"]: True, second["Message-ID"]: True,
                    third["Message-ID"]: False, other["Message-ID"]: False}


async def test_limits_give_clear_notices(
    email_bridge_with: Callable[..., Awaitable[Bridge]], mail_stack: MailStack, matrix_user: MakeUser,
    mailbox: tuple[str, str], people: People,
) -> None:
    bridge = await email_bridge_with(**{"outbound.max_recipients": 2, "outbound.max_mails_per_hour": 2})
    user = await matrix_user()
    me, bob, carol, dave = mailbox[0], people.bob, people.carol, people.dave
    management = await logged_in(bridge, user, mail_stack, mailbox)
    group, root, _ = await receive_first_mail(user, mail_stack, me, bob, "Team", "Hello all",
                                              cc=[carol, dave])
    too_many = await user.send_text(group, "Hi everyone", **{"m.relates_to": in_thread(root["event_id"])})
    notice = await wait_reply_notice(user, group, bridge.bot_mxid, too_many, "Too many recipients")
    assert "(3)" in notice and "limit is 2" in notice, notice

    room = await start_chat(bridge, user, management, bob)
    allowed = [await user.send_text(room, f"Subject: Mail {n}\nnumber {n}") for n in (1, 2)]
    over = await user.send_text(room, "Subject: Mail 3\nnumber 3")
    notice = await wait_reply_notice(user, room, bridge.bot_mxid, over, "per hour")
    assert "limit of 2 mails per hour" in notice, notice
    for event in allowed:
        await wait_for_mail(mail_stack, bob, for_event(event))
    received = await mails_in(mail_stack, bob)
    assert not any(for_event(over)(m) or for_event(too_many)(m) for m in received)
    assert not any(with_subject("Mail 3")(m) for m in received)
