"""The demo conversation: alice logs in to her mailbox through the bot, bob mails her, she answers.

Alice's client is matrix-nio with end-to-end encryption (devstack.e2ee_client): her chat with the
bot and bob's portal are encrypted rooms, and everything shown was decrypted on her device.

`python -m devstack.demo configure --dir DIR` writes the bridge config and registration for the demo
stack (fixed loopback ports, see devstack); `converse` runs the conversation against the running
bridge and prints what happened.
"""

from __future__ import annotations

import argparse
import asyncio
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
import smtplib
import sys
import time

from nio import RoomMessageText

from bridge.__main__ import example_for
from bridge.__main__ import main as bridge_main
from bridge.connectors import load_connector
from bridge.core.config import Config
from devstack.__main__ import MAIL_PORTS, SYNAPSE_PORT
from devstack.bot_flows import email_login
from devstack.e2ee_client import E2EEUser
from devstack.stack import MailStack

HS_URL = f"http://127.0.0.1:{SYNAPSE_PORT}"
BOT = "@letterboxbot:localhost"
ALICE, BOB = "alice@test.local", "bob@test.local"


def configure(directory: Path) -> None:
    config_path, registration = directory / "config.yaml", directory / "registration.yaml"
    if not config_path.exists():
        bridge_main(["-g", "-c", str(config_path), "-r", str(registration)])
    config = Config.load(config_path, example_for(load_connector("email")))
    config["homeserver.address"] = HS_URL
    config["homeserver.domain"] = "localhost"
    config["database.url"] = f"sqlite:{directory / 'letterbox.db'}"
    config["bridge.permissions"] = {"*": "relay", "localhost": "user", "@admin:localhost": "admin"}
    config["network.email.ca_file"] = str(directory / "stack" / "tls" / "ca.pem")
    config["network.email.discovery.enabled"] = False  # the demo's domain is not in any DNS
    config["network.email.allowed_private_servers"] = ["127.0.0.0/8"]  # the demo's servers
    for key in ("encryption.allow", "encryption.default"):  # an encrypted DM and portal
        config[key] = True
    config.save()
    bridge_main(["-g", "-c", str(config_path), "-r", str(registration)])


async def converse(directory: Path) -> None:
    alice = E2EEUser(HS_URL, "@alice:localhost", directory / "alice-keys")
    try:
        await alice.login("alicepass")
        room = await _management_room(alice)
        logins = await _ask(alice, room, "list-logins")
        if ALICE not in logins:
            print("[demo] logging in alice@test.local through the bot (encrypted chat)")
            await email_login_demo(alice, room)
        subject = f"Demo {time.strftime('%H:%M:%S')}"
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = f"Bob <{BOB}>", ALICE, subject
        msg["Message-ID"] = make_msgid(domain="test.local")
        msg.set_content("Hello Alice, this mail went through Postfix and Dovecot into Matrix.")
        with smtplib.SMTP("127.0.0.1", MAIL_PORTS.smtp) as smtp:
            smtp.send_message(msg)
        print(f"[demo] bob mailed alice: {subject!r}")
        portal, event = await _portal_with(alice, subject)
        state = "encrypted, decrypted on alice's device" if event.decrypted else "NOT encrypted"
        print(f"[demo] the mail is in Matrix room {portal} as bob's ghost ({state})")
        await alice.send_text(portal, "Thanks Bob! Written in Matrix, delivered as email.")
        reply = await asyncio.to_thread(_wait_for_reply, directory, subject)
        print(f"[demo] bob received alice's encrypted answer by email: Subject {reply!r}")
        print(f"\n[demo] All up. Log in with any Matrix client at {HS_URL} as alice / alicepass.")
        print("[demo] Mail: alice@test.local and bob@test.local on IMAP 127.0.0.1:"
              f"{MAIL_PORTS.imap} (STARTTLS), SMTP 127.0.0.1:{MAIL_PORTS.submission}.")
        print("[demo] Stop everything with: ./devstack/demo.sh down")
    finally:
        await alice.close()


async def email_login_demo(alice: E2EEUser, room: str) -> None:
    class _Bridge:
        bot_mxid = BOT
    await email_login(_Bridge(), alice, room, ALICE, "alicepass",
                      imap=f"127.0.0.1:{MAIL_PORTS.imap}:starttls",
                      smtp=f"127.0.0.1:{MAIL_PORTS.submission}:starttls")


async def _management_room(alice: E2EEUser) -> str:
    """Alice's encrypted chat with the bot (made on the first run)."""
    for room in alice.client.rooms.values():
        if room.encrypted and set(room.users) == {alice.user_id, BOT}:
            return str(room.room_id)
    room_id = await alice.create_encrypted_dm(BOT)
    await alice.wait_notice(room_id, BOT, "Send `help`", timeout=30)
    return room_id


async def _ask(alice: E2EEUser, room: str, command: str) -> str:
    before = len(alice.notices(room, BOT))
    await alice.send_text(room, command)
    await alice.wait_for(lambda: len(alice.notices(room, BOT)) > before, 30, f"an answer to {command}")
    return alice.notices(room, BOT)[-1]


async def _portal_with(alice: E2EEUser, text: str) -> tuple[str, RoomMessageText]:
    async def find() -> tuple[str, RoomMessageText] | None:
        for room in sorted(alice.direct_invites - set(alice.client.rooms)):
            await alice.join(room)
        for room, events in alice.events.items():
            for event in events:
                if isinstance(event, RoomMessageText) and text in event.body:
                    return room, event
        return None
    deadline = time.monotonic() + 30
    while (found := await find()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no room shows {text!r}")
        await alice.sync(timeout_ms=500)
    return found


def _wait_for_reply(directory: Path, subject: str) -> str:
    stack = MailStack(directory / "stack", {"bob": "bobpass"}, ports=MAIL_PORTS)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        imap = stack.imap_client("bob")
        try:
            imap.select("INBOX")
            _, data = imap.search(None, "SUBJECT", f'"Re: {subject}"')
            if data[0]:
                return f"Re: {subject}"
        finally:
            imap.logout()
        time.sleep(0.5)
    raise TimeoutError("bob did not receive the answer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.demo")
    parser.add_argument("action", choices=["configure", "converse"])
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.action == "configure":
        configure(args.dir)
    else:
        asyncio.run(converse(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
