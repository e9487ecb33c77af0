"""The demo conversation: alice logs in to her mailbox through the bot, bob mails her, she answers;
carol signs in to her mailbox with OAuth at the rig's issuer and gets a mail.

Alice's and carol's client is matrix-nio with end-to-end encryption (devstack.e2ee_client): their
chats with the bot and bob's portals are encrypted rooms, and everything shown was decrypted on
their devices. The rig's issuer (its own process on a fixed port, devstack.issuer_service) is the
OAuth provider of the demo's mail domain; the demo plays carol's browser there, like the tests.

`python -m devstack.demo configure --dir DIR` writes the bridge config and registration for the demo
stack (fixed loopback ports, see devstack); `converse` runs the conversation against the running
bridge and prints what happened.
"""

from __future__ import annotations

import argparse
import asyncio
from email.message import EmailMessage
from email.utils import make_msgid
import html
import logging
from pathlib import Path
import re
import smtplib
import sys
import time
from typing import Any

import aiohttp
from nio import RoomMessageText

from bridge.__main__ import example_for
from bridge.__main__ import main as bridge_main
from bridge.connectors import load_connector
from bridge.core.config import Config
from bridge.core.health_probe import probe
from devstack.__main__ import MAIL_PORTS, OAUTH_PORT, SYNAPSE_PORT
from devstack.bot_flows import email_login
from devstack.e2ee_client import E2EEUser
from devstack.oauth_issuer import CLIENT_ID, CLIENT_SECRET, IssuerAddress, issuer_url
from devstack.stack import MailStack

HS_URL = f"http://127.0.0.1:{SYNAPSE_PORT}"
BOT = "@letterboxbot:localhost"
ALICE, BOB, CAROL = "alice@test.local", "bob@test.local", "carol@test.local"
ISSUER = IssuerAddress(issuer_url(OAUTH_PORT))
PROVIDER_NAME = "Rig Mail"
LINK = re.compile(rf"Sign in with {PROVIDER_NAME}: (\S+)")


def rig_provider() -> dict[str, Any]:
    """The rig's issuer as the OAuth provider of the demo's mail domain."""
    return {"id": "rig", "name": PROVIDER_NAME, "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET, "authorize_url": ISSUER.authorize_url,
            "token_url": ISSUER.token_url, "scopes": ["mail"], "domains": ["test.local"],
            "imap": f"127.0.0.1:{MAIL_PORTS.imap}:starttls",
            "smtp": f"127.0.0.1:{MAIL_PORTS.submission}:starttls"}


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
    config["metrics.enabled"] = True  # its /health/ready says when the bridge has started
    config["network.email.oauth.providers"] = [rig_provider()]
    # the provider sends the browser back to the bridge's callback on its appservice listener
    config["bridge.public_url"] = f"http://127.0.0.1:{config['appservice.port']}/public"
    config.save()
    bridge_main(["-g", "-c", str(config_path), "-r", str(registration)])


def wait_until_ready(directory: Path, timeout: float = 90.0) -> None:
    """Until the bridge says it has started: the room keys users' devices send to the bot are
    taken in only from then on (a message written earlier could not be decrypted)."""
    config = Config.load(directory / "config.yaml", example_for(load_connector("email")))
    deadline = time.monotonic() + timeout
    while not (answer := probe(config))[0]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bridge is not ready after {timeout:.0f} s: {answer[1]}")
        time.sleep(0.2)


async def converse(directory: Path) -> None:
    await asyncio.to_thread(wait_until_ready, directory)
    alice = E2EEUser(HS_URL, "@alice:localhost", directory / "alice-keys")
    carol = E2EEUser(HS_URL, "@carol:localhost", directory / "carol-keys")
    try:
        await alice.login("alicepass")
        room = await _management_room(alice)
        logins = await _ask(alice, room, "list-logins")
        if ALICE not in logins:
            print("[demo] logging in alice@test.local through the bot (encrypted chat)")
            await email_login_demo(alice, room)
        subject = f"Demo {time.strftime('%H:%M:%S')}"
        _send_mail(ALICE, subject, "Hello Alice, this mail went through Postfix and Dovecot "
                   "into Matrix.")
        print(f"[demo] bob mailed alice: {subject!r}")
        portal, event = await _portal_with(alice, subject)
        print(f"[demo] the mail is in Matrix room {portal} as bob's ghost ({_state(event)})")
        await alice.send_text(portal, "Thanks Bob! Written in Matrix, delivered as email.")
        reply = await asyncio.to_thread(_wait_for_reply, directory, subject)
        print(f"[demo] bob received alice's encrypted answer by email: Subject {reply!r}")

        await carol.login("carolpass")
        await carol_oauth_demo(carol)

        print(f"\n[demo] All up. Log in with any Matrix client at {HS_URL} as alice / alicepass"
              " or carol / carolpass.")
        print("[demo] Mail: alice@test.local, bob@test.local and carol@test.local on IMAP "
              f"127.0.0.1:{MAIL_PORTS.imap} (STARTTLS), SMTP 127.0.0.1:{MAIL_PORTS.submission}; "
              f"OAuth sign-in at {ISSUER.url}.")
        print("[demo] Stop everything with: ./devstack/demo.sh down")
    finally:
        await alice.close()
        await carol.close()


async def carol_oauth_demo(carol: E2EEUser) -> None:
    """Carol signs in to her mailbox with OAuth through the bot (once), then bob mails her."""
    room = await _management_room(carol)
    logins = await _ask(carol, room, "list-logins")
    if CAROL in logins:
        state = next(line for line in logins.splitlines() if CAROL in line)
        print(f"[demo] carol signed in with OAuth on an earlier run: {state.strip('• ')}")
    else:
        print(f"[demo] signing carol@test.local in with OAuth at {ISSUER.url} through the bot "
              "(encrypted chat)")
        await _answer(carol, room, "login", "Email address")
        offer = await _answer(carol, room, CAROL, f"Sign in with {PROVIDER_NAME}")
        found = LINK.search(offer)
        if found is None:
            raise RuntimeError(f"no sign-in link in the bot's answer: {offer!r}")
        print(f"[demo] the bot sent carol a sign-in link: {found.group(1)}")
        redirect = await _approve(found.group(1), CAROL)
        print(f"[demo] carol approved at the issuer; it sent her browser to: {redirect}")
        page = await _open_page(redirect)
        print(f"[demo] the bridge's callback page says: {page}")
        done = await carol.wait_notice(room, BOT, f"Logged in as {CAROL}", timeout=30)
        print(f"[demo] the bot told carol: {done}")
    subject = f"Demo for Carol {time.strftime('%H:%M:%S')}"
    _send_mail(CAROL, subject, "Hello Carol, your mailbox is signed in with an OAuth token.")
    print(f"[demo] bob mailed carol: {subject!r}")
    portal, event = await _portal_with(carol, subject)
    print(f"[demo] the mail is in carol's Matrix room {portal} as bob's ghost ({_state(event)}), "
          "fetched over IMAP with her OAuth token")


async def _approve(link: str, address: str) -> str:
    """Carol's browser at the issuer: signed in there as `address`, she approves; returns the
    address the issuer redirects the browser to."""
    auth = {"Authorization": aiohttp.encode_basic_auth(address, "browser-session")}
    async with aiohttp.ClientSession() as http:
        async with http.get(link, headers=auth, allow_redirects=False) as resp:
            if resp.status != 302:
                raise RuntimeError(f"the issuer answered {resp.status}: {await resp.text()}")
            return resp.headers["Location"]


async def _open_page(url: str) -> str:
    """The browser follows the redirect to the bridge's callback: the page's message."""
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"the callback page answered {resp.status}: {text}")
    found = re.search(r"<p>(.*?)</p>", text, re.S)
    return html.unescape(found.group(1)) if found else text


def _send_mail(to: str, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"Bob <{BOB}>", to, subject
    msg["Message-ID"] = make_msgid(domain="test.local")
    msg.set_content(body)
    with smtplib.SMTP("127.0.0.1", MAIL_PORTS.smtp) as smtp:
        smtp.send_message(msg)


def _state(event: RoomMessageText) -> str:
    return "encrypted, decrypted on the user's device" if event.decrypted else "NOT encrypted"


async def email_login_demo(alice: E2EEUser, room: str) -> None:
    class _Bridge:
        bot_mxid = BOT
    # the demo's domain has an OAuth provider (the rig's issuer): alice chooses her password
    await email_login(_Bridge(), alice, room, ALICE, "alicepass",
                      imap=f"127.0.0.1:{MAIL_PORTS.imap}:starttls",
                      smtp=f"127.0.0.1:{MAIL_PORTS.submission}:starttls", oauth_offered=True)


async def _management_room(user: E2EEUser) -> str:
    """The user's encrypted chat with the bot (made on the first run)."""
    for room in user.client.rooms.values():
        if room.encrypted and set(room.users) == {user.user_id, BOT}:
            return str(room.room_id)
    room_id = await user.create_encrypted_dm(BOT)
    await user.wait_notice(room_id, BOT, "Send `help`", timeout=30)
    return room_id


async def _ask(user: E2EEUser, room: str, command: str) -> str:
    before = len(user.notices(room, BOT))
    await user.send_text(room, command)
    await user.wait_for(lambda: len(user.notices(room, BOT)) > before, 30, f"an answer to {command}")
    return user.notices(room, BOT)[-1]


async def _answer(user: E2EEUser, room: str, text: str, expect: str) -> str:
    """Send `text`; the bot's first new notice containing `expect`."""
    before = len(user.notices(room, BOT))

    def found() -> str | None:
        return next((n for n in user.notices(room, BOT)[before:] if expect in n), None)

    await user.send_text(room, text)
    answer: str = await user.wait_for(found, 30, f"a notice with {expect!r}")
    return answer


async def _portal_with(user: E2EEUser, text: str) -> tuple[str, RoomMessageText]:
    async def find() -> tuple[str, RoomMessageText] | None:
        for room in sorted(user.direct_invites - set(user.client.rooms)):
            await user.join(room)
        for room, events in user.events.items():
            for event in events:
                if isinstance(event, RoomMessageText) and text in event.body:
                    return room, event
        return None
    deadline = time.monotonic() + 30
    while (found := await find()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no room shows {text!r}")
        await user.sync(timeout_ms=500)
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
    # each run logs in a new device, which cannot read the encrypted history of earlier runs;
    # nio warns about every such message (failures of the demo itself still raise)
    logging.getLogger("nio").setLevel(logging.ERROR)
    if args.action == "configure":
        configure(args.dir)
    else:
        asyncio.run(converse(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
