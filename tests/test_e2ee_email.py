"""Encrypted rooms end to end with the email connector, played by matrix-nio (vodozemac), a Matrix
client this project did not write: login in an encrypted DM, a mail with an inline image and an
attachment in an encrypted portal, an encrypted reply with a file reaching the correspondent's
mailbox byte for byte, and both directions again after a restart. Both database backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path
import uuid

from nio import Event, RoomEncryptedFile, RoomEncryptedImage, RoomMessageText
import pytest

from devstack.bot_flows import email_login, management_room
from devstack.e2ee_client import E2EEUser
from devstack.stack import MailStack, Synapse
from tests.helpers.email_e2e import mail, servers, wait_for_mail
from tests.helpers.harness import BridgeSetup, start_bridge

pytestmark = pytest.mark.servers

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360"
    "000002000154a24f5d0000000049454e44ae426082"
)
PDF = b"%PDF-1.4 encrypted portal test\n" + bytes(range(256))


@pytest.fixture
def e2ee_email_config(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str,
                      mail_stack: MailStack, tmp_path: Path) -> Path:
    return bridge_setups["email"].config_for(
        tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
        network={"ca_file": str(mail_stack.ca_file), "imap.poll_interval": 1,
                 "outbound.retry_schedule": [1, 2, 30]},
        core={"encryption.default": True, "encryption.decrypt_timeout": 4},
    )


@pytest.fixture
async def nio_user(synapse: Synapse, tmp_path: Path) -> AsyncIterator[E2EEUser]:
    name = f"nio{uuid.uuid4().hex[:8]}"
    user_id, _ = synapse.register_user(name, "pass-" + name)
    user = E2EEUser(synapse.hs_url, user_id, tmp_path / "nio")
    await user.login("pass-" + name)
    yield user
    await user.close()


def by_text(text: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, RoomMessageText) and text in e.body


def rich_mail(sender: str, me: str, subject: str) -> EmailMessage:
    html = '<p>See the <b>plan</b><img src="cid:logo@x" alt="logo"></p>'
    msg = mail(sender, [me], subject, "See the plan", html=html)
    msg.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@x>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="plan.pdf")
    return msg


async def reply_with_file(user: E2EEUser, room: str, data: bytes, name: str) -> str:
    file = await user.upload_encrypted(data, "application/octet-stream", name)
    return await user.send(room, {"msgtype": "m.file", "body": name, "filename": name, "file": file,
                                  "info": {"mimetype": "application/octet-stream", "size": len(data)}})


def attachment_of(message: EmailMessage, name: str) -> bytes:
    for part in message.iter_attachments():
        if part.get_filename() == name:
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload
    raise AssertionError(f"no attachment {name}")


async def test_encrypted_portal_both_ways_and_after_a_restart(
    e2ee_email_config: Path, nio_user: E2EEUser, mail_stack: MailStack
) -> None:
    me, my_password = mail_stack.add_user(f"u{uuid.uuid4().hex[:10]}", "pw-me"), "pw-me"
    bob = mail_stack.add_user(f"bob{uuid.uuid4().hex[:8]}", "pw-bob")
    bridge = await start_bridge(e2ee_email_config, connector_name="email")
    try:
        room = await management_room(bridge, nio_user)
        await email_login(bridge, nio_user, room, me, my_password, **servers(mail_stack))

        mail_stack.deliver(rich_mail(f"Bob <{bob}>", me, "Plans").as_bytes(), [me], bob)
        portal = await nio_user.wait_for_direct_invite(exclude={room})
        await nio_user.join(portal)
        text = await nio_user.wait_for_event(portal, by_text("See the plan"), what="the mail's text")
        assert text.decrypted and "[image: logo]" in (text.formatted_body or "")
        image = await nio_user.wait_for_event(portal, lambda e: isinstance(e, RoomEncryptedImage),
                                              what="the inline image")
        pdf = await nio_user.wait_for_event(portal, lambda e: isinstance(e, RoomEncryptedFile)
                                            and e.body == "plan.pdf", what="the attachment")
        for event in (image, pdf):
            assert event.decrypted and "url" not in event.source["content"], event.source
        assert await nio_user.download_decrypted(image.source["content"]["file"]) == PNG
        assert await nio_user.download_decrypted(pdf.source["content"]["file"]) == PDF
        assert nio_user.undecryptable(portal) == []

        sent = bytes(range(256)) * 40 + b"\x00end"
        await reply_with_file(nio_user, portal, sent, "reply.bin")
        answer = await wait_for_mail(mail_stack, bob, lambda m: any(
            p.get_filename() == "reply.bin" for p in m.message.iter_attachments()), timeout=30)
        assert attachment_of(answer.message, "reply.bin") == sent
    finally:
        await bridge.stop()

    bridge = await start_bridge(e2ee_email_config, connector_name="email")
    try:
        again = mail(f"Bob <{bob}>", [me], "After the restart", "Still here after the restart")
        mail_stack.deliver(again.as_bytes(), [me], bob)
        later = await nio_user.wait_for_event(portal, by_text("Still here after the restart"),
                                              what="a mail after the restart")
        assert later.decrypted
        await nio_user.send_text(portal, "answer after restart")
        await wait_for_mail(mail_stack, bob, lambda m: "answer after restart" in m.raw.decode(errors="replace"),
                            timeout=30)
        await nio_user.send_text(room, "ping")
        await nio_user.wait_for(lambda: len([n for n in nio_user.notices(room, bridge.bot_mxid)
                                             if "Pong" in n]) >= 1, what="a pong after the restart")
    finally:
        await bridge.stop()
