"""SMTP submission against the real Postfix submission port (SASL via Dovecot, STARTTLS)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
import imaplib
import time
import uuid

import pytest

from bridge.connectors.email.addresses import Mailbox
from bridge.connectors.email.outbound import MailBody, OutgoingAttachment, OutgoingMail, compose
from bridge.connectors.email.outbound.smtp_submit import (
    SmtpAccount,
    SmtpAuthFailed,
    SmtpCertificateError,
    SmtpConfigError,
    SmtpConnectFailed,
    SmtpPermanent,
    SmtpTlsError,
    SmtpTransient,
    check_login,
    submit,
)
from devstack.ports import free_port
from devstack.stack import MailStack

pytestmark = pytest.mark.servers

ATTACHMENT = bytes(range(256)) * 64 + b"\r\n.\r\n\x00end"


def account(stack: MailStack, user: str = "alice", **changes) -> SmtpAccount:
    values = dict(
        host=stack.host,
        port=stack.submission_port,
        security="starttls",
        username=stack.address(user),
        password=stack.password(user),
        ca_file=str(stack.ca_file),
        timeout=10.0,
    )
    values.update(changes)
    return SmtpAccount(**values)


def message(stack: MailStack, to: list[str], subject: str = "Test") -> EmailMessage:
    return compose(
        OutgoingMail(
            sender=Mailbox(stack.address("alice"), "Alice Ünïcode"),
            to=[Mailbox(stack.address(u)) for u in to],
            subject=subject,
            body=MailBody(
                "Hello Bob,\n.\nA line with only a dot above.", "<p>Hello <b>Bob</b></p>"
            ),
            message_id=f"<{uuid.uuid4().hex}@test.local>",
            date=datetime.now(UTC),
            attachments=[
                OutgoingAttachment("Daten – 2024.bin", "application/octet-stream", ATTACHMENT)
            ],
        )
    )


def fetch_by_message_id(
    stack: MailStack, user: str, message_id: str, timeout: float = 10.0
) -> bytes:
    """Poll the user's INBOX until the mail with that Message-ID is there; return its bytes."""
    client = stack.imap_client(user)
    try:
        deadline = time.monotonic() + timeout
        while True:
            client.select("INBOX")
            status, data = client.search(None, "HEADER", "Message-ID", message_id)
            assert status == "OK"
            if data[0].split():
                status, parts = client.fetch(data[0].split()[-1], "(BODY.PEEK[])")
                assert status == "OK"
                return parts[0][1]
            if time.monotonic() > deadline:
                raise AssertionError(f"{message_id} did not arrive in {user}'s INBOX")
            time.sleep(0.05)
    finally:
        try:
            client.logout()
        except imaplib.IMAP4.error:
            client.shutdown()


@pytest.fixture
def blocks(mail_stack: MailStack) -> Iterator[MailStack]:
    yield mail_stack
    mail_stack.clear_recipient_blocks()


async def test_submit_arrives_in_inbox(mail_stack: MailStack) -> None:
    msg = message(mail_stack, ["bob"], subject="Grüße über STARTTLS")
    result = await submit(
        msg,
        account(mail_stack),
        envelope_from=mail_stack.address("alice"),
        recipients=[mail_stack.address("bob")],
    )
    assert result.accepted == [mail_stack.address("bob")]
    assert result.refused == {}
    assert result.reply.startswith("2.0.0")

    raw = await asyncio.to_thread(fetch_by_message_id, mail_stack, "bob", msg["Message-ID"])
    got = BytesParser(policy=policy.default).parsebytes(raw)
    assert str(got["Subject"]) == "Grüße über STARTTLS"
    assert got["From"].addresses[0].display_name == "Alice Ünïcode"
    assert (
        got.get_body(("plain",))
        .get_content()
        .replace("\r\n", "\n")
        .startswith("Hello Bob,\n.\nA line")
    )
    (attachment,) = got.iter_attachments()
    assert attachment.get_filename() == "Daten – 2024.bin"
    assert attachment.get_payload(decode=True) == ATTACHMENT


async def test_check_login_accepts_good_credentials(mail_stack: MailStack) -> None:
    await check_login(account(mail_stack))


async def test_plain_is_allowed_on_loopback(mail_stack: MailStack) -> None:
    await check_login(account(mail_stack, security="plain", ca_file=None))


async def test_wrong_password(mail_stack: MailStack) -> None:
    with pytest.raises(SmtpAuthFailed) as info:
        await check_login(account(mail_stack, password="wrong"))
    assert info.value.code == 535
    assert "password" in info.value.reason
    with pytest.raises(SmtpAuthFailed):
        await submit(
            message(mail_stack, ["bob"]),
            account(mail_stack, password="wrong"),
            envelope_from=mail_stack.address("alice"),
            recipients=[mail_stack.address("bob")],
        )


async def test_untrusted_certificate(mail_stack: MailStack) -> None:
    with pytest.raises(SmtpCertificateError) as info:
        await check_login(account(mail_stack, ca_file=None))
    assert "not trusted" in info.value.reason
    with pytest.raises(SmtpCertificateError):
        await submit(
            message(mail_stack, ["bob"]),
            account(mail_stack, ca_file=None),
            envelope_from=mail_stack.address("alice"),
            recipients=[mail_stack.address("bob")],
        )


async def test_implicit_tls_against_a_starttls_port(mail_stack: MailStack) -> None:
    with pytest.raises(SmtpTlsError) as info:
        await check_login(account(mail_stack, security="tls"))
    assert not isinstance(info.value, SmtpCertificateError)


async def test_nothing_listening(mail_stack: MailStack) -> None:
    with pytest.raises(SmtpConnectFailed) as info:
        await check_login(account(mail_stack, port=free_port()))
    assert "cannot connect" in info.value.reason


async def test_plain_refused_for_remote_hosts() -> None:
    remote = SmtpAccount("smtp.example.org", 25, "plain", "u", "p")
    with pytest.raises(SmtpConfigError) as info:
        await check_login(remote)
    assert "unencrypted" in info.value.reason


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("450 4.2.0 Mailbox busy, try later", SmtpTransient),
        ("550 5.1.1 No such user here", SmtpPermanent),
    ],
)
async def test_blocked_recipient(blocks: MailStack, reply: str, error: type) -> None:
    dave = blocks.address("dave")
    await asyncio.to_thread(blocks.set_recipient_block, "dave", reply)
    with pytest.raises(error) as info:
        await submit(
            message(blocks, ["dave"]),
            account(blocks),
            envelope_from=blocks.address("alice"),
            recipients=[dave],
        )
    exc = info.value
    assert exc.recipients == [dave]
    assert exc.code == int(reply[:3])
    assert "try later" in exc.text or "No such user" in exc.text
    assert dave in exc.reason
    assert set(exc.refused) == {dave}


async def test_partial_refusal(blocks: MailStack) -> None:
    bob, carol, dave = (blocks.address(u) for u in ("bob", "carol", "dave"))
    await asyncio.to_thread(blocks.set_recipient_block, "dave", "550 5.1.1 No such user here")
    await asyncio.to_thread(blocks.set_recipient_block, "carol", "452 4.2.2 Over quota")
    msg = message(blocks, ["bob", "carol", "dave"])
    result = await submit(
        msg, account(blocks), envelope_from=blocks.address("alice"), recipients=[bob, carol, dave]
    )
    assert result.accepted == [bob]
    assert set(result.refused) == {carol, dave}
    assert result.refused[dave][0] == 550 and "No such user" in result.refused[dave][1]
    assert list(result.transient_refused) == [carol]
    assert list(result.permanent_refused) == [dave]
    await asyncio.to_thread(fetch_by_message_id, blocks, "bob", msg["Message-ID"])
