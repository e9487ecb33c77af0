"""Mail is untrusted input: attacks played through the real Postfix and Dovecot into the bridge,
watched from Matrix by a real client, with replies read back from the real mailboxes.

Bob (a correspondent) and Mallory (the attacker) have mailboxes on the rig, so what the owner's
messages became is read from Bob's INBOX. Signed mail is signed by the rig's DKIM key, published
by its loopback DNS server (`dkim_rig`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any
import uuid

import pytest

from bridge.connectors.email.outbound import is_message_id_for_event
from bridge.core.bridge import Bridge
from devstack.dkim import DkimRig
from devstack.matrix_client import Event, MatrixTestClient
from devstack.stack import MailStack, Synapse
from tests.helpers.email_e2e import (
    StoredMail,
    by_body,
    logged_in,
    mail,
    signed,
    wait_for_mail,
)
from tests.helpers.harness import BridgeSetup, start_bridge

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


@dataclass(frozen=True, slots=True)
class People:
    bob: str
    mallory: str


@pytest.fixture(scope="module")
def people(mail_stack: MailStack) -> People:
    return People(*(mail_stack.add_user(f"{name}{uuid.uuid4().hex[:8]}", f"pw-{name}-secret")
                    for name in ("bob", "mallory")))


@pytest.fixture
async def bridge_with(
    bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str, mail_stack: MailStack,
    dkim_rig: DkimRig, tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[Bridge]]]:
    """`await bridge_with(**options)`: an email bridge with some `network.email` options set."""
    started: list[Bridge] = []

    async def start(**options: Any) -> Bridge:
        network = {"ca_file": str(mail_stack.ca_file), "imap.poll_interval": 1,
                   "outbound.retry_schedule": [1, 2, 30],
                   "dns.nameserver": dkim_rig.address, "authenticity.dns_timeout": 2,
                   **options}
        config = bridge_setups["email"].config_for(tmp_path.name, hs_url=synapse.hs_url,
                                                   db_url=db_url, network=network)
        started.append(await start_bridge(config, connector_name="email"))
        return started[-1]

    yield start
    for bridge in started:
        await bridge.stop()


class Scene:
    """A logged-in Matrix user with a mailbox, and what they received so far."""

    def __init__(self, bridge: Bridge, user: MatrixTestClient, stack: MailStack, rig: DkimRig,
                 me: str, people: People) -> None:
        self.bridge, self.user, self.stack, self.rig, self.me = bridge, user, stack, rig, me
        self.bob, self.mallory = people.bob, people.mallory
        self.BOB, self.MALLORY = f"Bob Example <{people.bob}>", f"Mallory <{people.mallory}>"

    def deliver(self, msg: EmailMessage | bytes, *, sign: bool = False, envelope: str = "x@example.org") -> None:
        raw = msg if isinstance(msg, bytes) else (signed(self.rig, msg) if sign else msg.as_bytes())
        self.stack.deliver(raw, [self.me], envelope)

    async def new_room(self, text: str) -> tuple[str, Event]:
        """The room a new mail opened (invite accepted) and the mail's event, found by `text`."""
        room = await self.user.wait_for_room_invite(timeout=20)
        await self.user.join(room)
        return room, await self.user.wait_for_event(room, by_body(text), timeout=20)

    async def sent(self, event_id: str, to: str | None = None) -> StoredMail:
        """The mail the bridge made from the Matrix event, as it reached `to` (default: Bob)."""
        return await wait_for_mail(self.stack, to or self.bob,
                                   lambda m: is_message_id_for_event(m.message_id, event_id), timeout=20)

    def ghost_name(self, state: list[Event], address: str) -> str:
        ghost = self.bridge.ghosts.mxid(address)
        return next(e["content"].get("displayname", "") for e in state
                    if e["type"] == "m.room.member" and e["state_key"] == ghost)


@pytest.fixture
async def scene(email_config: Path, matrix_user: MakeUser, mail_stack: MailStack, dkim_rig: DkimRig,
                mailbox: tuple[str, str], people: People) -> AsyncIterator[Scene]:
    bridge = await start_bridge(email_config, connector_name="email")
    user = await matrix_user()
    await logged_in(bridge, user, mail_stack, mailbox)
    yield Scene(bridge, user, mail_stack, dkim_rig, mailbox[0], people)
    await bridge.stop()


def recipients(m: StoredMail) -> list[str]:
    return [a.addr_spec for h in ("To", "Cc") if m.message[h] is not None for a in m.message[h].addresses]


async def bob_room(s: Scene) -> tuple[str, EmailMessage]:
    """Bob's verified first mail: his room, and the mail."""
    first = mail(s.BOB, [s.me], "Lunch on Friday?", "Shall we meet at noon?")
    s.deliver(first, sign=True)
    room, _ = await s.new_room("Shall we meet at noon?")
    return room, first


# ---------------------------------------------------------------- 3. thread hijack

async def test_stranger_naming_a_known_thread_gets_a_room_of_their_own(scene: Scene) -> None:
    s = scene
    room, first = await bob_room(s)
    hijack = mail(s.MALLORY, [s.me], "Re: Lunch on Friday?", "Send the answer to me instead", reply_to=first)
    s.deliver(hijack, sign=True)  # even authenticated: mallory is not one of the room's people
    own_room, event = await s.new_room("Send the answer to me instead")
    assert own_room != room
    assert event["sender"] == s.bridge.ghosts.mxid(s.mallory)
    assert "m.relates_to" not in event["content"]
    assert not any("instead" in e["content"].get("body", "") for e in s.user.messages(room))

    answer = await s.user.send_text(room, "Noon is fine")
    assert recipients(await s.sent(answer)) == [s.bob]


async def test_unverified_mail_in_a_thread_does_not_choose_the_recipients(scene: Scene) -> None:
    s = scene
    room, first = await bob_room(s)
    forged = mail(s.BOB, [s.me], "Re: Lunch on Friday?", "Copy my friend",
                  cc=[s.MALLORY], reply_to=first)
    s.deliver(forged)  # unsigned: anyone can write this From line
    event = await s.user.wait_for_event(room, by_body("Copy my friend"), timeout=20)
    assert "Sender not verified" in event["content"]["body"]

    answer = await s.user.send_text(room, "Sure")
    assert recipients(await s.sent(answer)) == [s.bob]
    notice = await s.user.wait_for_event(
        room, lambda e: e["sender"] == s.bridge.bot_mxid and "Not sent to" in e["content"].get("body", ""))
    assert s.mallory in notice["content"]["body"]


# ---------------------------------------------------------------- 4. fake bounces

def bounce(sender: str, me: str, failed: str, original_id: str) -> bytes:
    """A delivery status notification (RFC 3464) from `sender` about the mail `original_id`."""
    return (
        f"From: Mail Delivery System <{sender}>\r\n"
        f"To: {me}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {make_msgid(domain='bounce.example')}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour mail could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {original_id}\r\nSubject: Re: Lunch on Friday?\r\n"
        "--b--\r\n"
    ).encode()


async def test_fake_bounce_is_not_tied_to_the_sent_mail(scene: Scene) -> None:
    s = scene
    room, _ = await bob_room(s)
    answer = await s.user.send_text(room, "Noon is fine")
    sent = await s.sent(answer)
    s.deliver(bounce("MAILER-DAEMON@evil.example", s.me, s.bob, sent.message_id), envelope="")
    bounce_room, notice = await s.new_room("Delivery failed")
    assert bounce_room != room
    assert "m.relates_to" not in notice["content"]
    assert "Sender not verified" in notice["content"]["body"]

    again = await s.user.send_text(room, "Did you get it?")
    assert recipients(await s.sent(again)) == [s.bob]


async def test_bounce_from_the_own_mail_server_is_shown_on_the_mail_and_never_answered(
        scene: Scene) -> None:
    s = scene
    room, _ = await bob_room(s)
    answer = await s.user.send_text(room, "Noon is fine")
    sent = await s.sent(answer)
    # As the owner's own Postfix (myhostname mail.test.local) reports a failure.
    s.deliver(bounce("MAILER-DAEMON@mail.test.local", s.me, s.bob, sent.message_id), envelope="")
    notice = await s.user.wait_for_event(room, by_body("Delivery failed"), timeout=20)
    assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == answer
    assert "Sender not verified" not in notice["content"]["body"]

    again = await s.user.send_text(room, "Did you get it?")
    assert recipients(await s.sent(again)) == [s.bob]


# ---------------------------------------------------------------- 5. sender authenticity

async def test_forged_sender_is_marked_and_renames_nobody(scene: Scene) -> None:
    s = scene
    room, _ = await bob_room(s)
    s.deliver(mail(f"Evil Twin <{s.bob}>", [s.me], "Change of plan", "New bank details attached"))
    event = await s.user.wait_for_event(room, by_body("New bank details"), timeout=20)
    assert event["content"]["body"].startswith("⚠️ Sender not verified")
    assert "<em>⚠️ Sender not verified" in event["content"]["formatted_body"]
    assert s.ghost_name(await s.user.room_state(room), s.bob) == f"Bob Example ({s.bob})"


async def test_tampered_signature_is_marked_as_failed(scene: Scene) -> None:
    s = scene
    msg = mail(s.BOB, [s.me], "Invoice", "Pay 100 EUR")
    tampered = signed(s.rig, msg).replace(b"Pay 100 EUR", b"Pay 900 EUR")
    s.deliver(tampered)
    _, event = await s.new_room("Pay 900 EUR")
    assert event["content"]["body"].startswith("⚠️ Sender check failed")
    assert "signature is invalid" in event["content"]["body"]


async def test_topmost_trusted_authentication_results_vouch_for_the_sender(
    bridge_with: Callable[..., Awaitable[Bridge]], matrix_user: MakeUser, mail_stack: MailStack,
    dkim_rig: DkimRig, mailbox: tuple[str, str], people: People,
) -> None:
    bridge = await bridge_with(**{"authenticity.trusted_authserv_ids": {"*": ["mx.rig.test"]}})
    user = await matrix_user()
    await logged_in(bridge, user, mail_stack, mailbox)
    s = Scene(bridge, user, mail_stack, dkim_rig, mailbox[0], people)
    msg = mail(s.BOB, [s.me], "Hello", "Vouched for by the server")
    # What the receiving server adds on top of the (unsigned) mail.
    raw = b"Authentication-Results: mx.rig.test; dmarc=pass header.from=test.local\r\n" + msg.as_bytes()
    s.deliver(raw)
    room, event = await s.new_room("Vouched for by the server")
    assert "⚠️" not in event["content"]["body"]
    assert s.ghost_name(await user.room_state(room), s.bob) == f"Bob Example ({s.bob})"


async def test_forged_authentication_results_below_the_trusted_one_are_ignored(
    bridge_with: Callable[..., Awaitable[Bridge]], matrix_user: MakeUser, mail_stack: MailStack,
    dkim_rig: DkimRig, mailbox: tuple[str, str], people: People,
) -> None:
    bridge = await bridge_with(**{"authenticity.trusted_authserv_ids": {"*": ["mx.rig.test"]}})
    user = await matrix_user()
    await logged_in(bridge, user, mail_stack, mailbox)
    s = Scene(bridge, user, mail_stack, dkim_rig, mailbox[0], people)
    forged = mail(s.BOB, [s.me], "Hello", "Trust me",
                  headers={"Authentication-Results": "mx.rig.test; dmarc=pass header.from=test.local"})
    raw = b"Authentication-Results: mx.rig.test; dmarc=fail header.from=test.local\r\n" + forged.as_bytes()
    s.deliver(raw)
    _, event = await s.new_room("Trust me")
    assert event["content"]["body"].startswith("⚠️ Sender check failed")


async def test_quarantine_collects_unverified_mail_in_its_own_room(
    bridge_with: Callable[..., Awaitable[Bridge]], matrix_user: MakeUser, mail_stack: MailStack,
    dkim_rig: DkimRig, mailbox: tuple[str, str], people: People,
) -> None:
    bridge = await bridge_with(**{"authenticity.quarantine": True})
    user = await matrix_user()
    await logged_in(bridge, user, mail_stack, mailbox)
    s = Scene(bridge, user, mail_stack, dkim_rig, mailbox[0], people)
    room, _ = await bob_room(s)
    s.deliver(mail(s.BOB, [s.me], "Urgent", "Quarantined claim"))
    quarantine, event = await s.new_room("Quarantined claim")
    assert quarantine != room
    names = [e["content"].get("name") for e in await user.room_state(quarantine) if e["type"] == "m.room.name"]
    assert names == ["Unverified mail"]
    assert event["content"]["body"].startswith("⚠️ Sender not verified")


# ---------------------------------------------------------------- 6. ghost identity

async def test_bidi_controls_are_stripped_from_names_and_filenames(scene: Scene) -> None:
    s = scene
    msg = mail(f"Bob \u202eelpmaxe\u202c <{s.bob}>", [s.me], "Invoice", "See attachment")
    msg.add_attachment(b"MZ fake", maintype="application", subtype="octet-stream",
                       filename="invoice\u202efdp.exe")
    s.deliver(msg, sign=True)
    room, _ = await s.new_room("See attachment")
    file_event = await s.user.wait_for_event(room, lambda e: e["content"].get("msgtype") == "m.file")
    assert file_event["content"]["body"] == "invoicefdp.exe"
    assert s.ghost_name(await s.user.room_state(room), s.bob) == f"Bob elpmaxe ({s.bob})"


async def test_unverified_group_room_is_named_by_addresses(scene: Scene) -> None:
    s = scene
    s.deliver(mail("Your Bank <alerts@bank.example>", [s.me], "Alert", "Group claim",
                   cc=["Security Team <security@bank.example>"]))
    room, _ = await s.new_room("Group claim")
    state = await s.user.room_state(room)
    names = [e["content"].get("name") for e in state if e["type"] == "m.room.name"]
    assert names == ["alerts@bank.example, security@bank.example"]
    assert s.ghost_name(state, "alerts@bank.example") == "alerts@bank.example"


# ---------------------------------------------------------------- 7. resource abuse

async def test_mail_to_many_people_adds_only_the_cap_and_lists_the_rest(
    bridge_with: Callable[..., Awaitable[Bridge]], matrix_user: MakeUser, mail_stack: MailStack,
    dkim_rig: DkimRig, mailbox: tuple[str, str], people: People,
) -> None:
    bridge = await bridge_with(**{"limits.max_people_per_mail": 5})
    user = await matrix_user()
    await logged_in(bridge, user, mail_stack, mailbox)
    s = Scene(bridge, user, mail_stack, dkim_rig, mailbox[0], people)
    crowd = [f"p{i}@crowd.example" for i in range(300)]
    s.deliver(mail(s.BOB, [s.me, *crowd], "Everyone", "Hello crowd"), sign=True)
    room, event = await s.new_room("Hello crowd")
    members = [e["state_key"] for e in await user.room_state(room) if e["type"] == "m.room.member"]
    ghosts = [m for m in members if m not in (user.user_id, bridge.bot_mxid)]
    assert len(ghosts) == 5
    assert "p53@crowd.example and 246 more." in event["content"]["body"]
    # The login's next mail is not held up behind it.
    s.deliver(mail("Carol <carol@example.org>", [s.me], "Next", "Right after the crowd"), sign=True)
    await s.new_room("Right after the crowd")


async def test_subject_that_decodes_to_a_line_break_does_not_block_replies(scene: Scene) -> None:
    s = scene
    nested = "=?UTF-8?Q?=3D=3FUTF-8=3FQ=3FHi=3D0ABcc=3A=5Fmallory=40evil=2Eexample=3F=3D?="
    raw = mail(s.BOB, [s.me], "placeholder", "About the subject").as_bytes().replace(
        b"Subject: placeholder", f"Subject: {nested}".encode())
    s.deliver(s.rig.sign(raw, "test.local"))
    room, _ = await s.new_room("About the subject")
    answer = await s.user.send_text(room, "Replying works")
    sent = await s.sent(answer)
    assert recipients(sent) == [s.bob]
    assert "\n" not in str(sent.message["Subject"]) and sent.message["Bcc"] is None
