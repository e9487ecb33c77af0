"""The loopback servers from `devstack` work as the other tests expect."""

from __future__ import annotations

import base64
from collections.abc import Callable
from email.message import EmailMessage
import hashlib
import imaplib
import json
import os
from pathlib import Path
import secrets
import shutil
import smtplib
import ssl
import time
import urllib.error
from urllib.parse import parse_qs, urlencode, urlsplit
import urllib.request
import uuid

import asyncpg
import pytest
from ruamel.yaml import YAML

from devstack.errors import ServerStartError
from devstack.issuer_service import IssuerService
from devstack.mail import MailPorts
from devstack.oauth_issuer import CLIENT_ID, CLIENT_SECRET, IssuerAddress
from devstack.ports import free_port, free_ports, port_accepts
from devstack.stack import MailStack, Synapse
from tests.helpers.harness import BridgeSetup

SynapseFactory = Callable[[list[Path]], Synapse]


def _message(subject: str, to: str, sender: str = "bob@test.local") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"body of {subject}\n")
    return bytes(msg)


def _wait_for_subject(client: imaplib.IMAP4, subject: str, timeout: float = 10) -> bytes:
    """Poll INBOX until a message with `subject` is there; return its raw bytes."""
    deadline = time.monotonic() + timeout
    while True:
        client.select("INBOX")
        typ, data = client.search(None, "SUBJECT", f'"{subject}"')
        assert typ == "OK"
        if data[0]:
            num = data[0].split()[-1]
            typ, parts = client.fetch(num, "(RFC822)")
            assert typ == "OK"
            raw = parts[0]
            assert isinstance(raw, tuple)
            return raw[1]
        assert time.monotonic() < deadline, f"{subject!r} not delivered within {timeout} s"
        time.sleep(0.02)


# ---------------------------------------------------------------- mail
def test_smtp_delivery_shows_up_over_imap_starttls(mail_stack: MailStack) -> None:
    subject = f"devstack {uuid.uuid4().hex}"
    mail_stack.deliver(_message(subject, "alice@test.local"), ["alice"], "bob@test.local")
    client = mail_stack.imap_client("alice")
    try:
        assert isinstance(client.sock, ssl.SSLSocket)  # STARTTLS done, CA-verified
        raw = _wait_for_subject(client, subject)
        assert f"body of {subject}".encode() in raw
        typ, boxes = client.list()
        assert typ == "OK"
        listing = b"\n".join(b for b in boxes if isinstance(b, bytes))
        assert b"\\Sent" in listing and b"\\Trash" in listing
    finally:
        client.logout()


def test_imaps_verifies_against_the_stack_ca_only(mail_stack: MailStack) -> None:
    with imaplib.IMAP4_SSL(
        mail_stack.host, mail_stack.imaps_port, ssl_context=mail_stack.ssl_context(), timeout=10
    ) as client:
        typ, _ = client.login("bob@test.local", "bobpass")
        assert typ == "OK"
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(
            mail_stack.host,
            mail_stack.imaps_port,
            ssl_context=ssl.create_default_context(),
            timeout=10,
        )


def test_submission_requires_auth(mail_stack: MailStack) -> None:
    ctx = mail_stack.ssl_context()
    with smtplib.SMTP(mail_stack.host, mail_stack.submission_port, timeout=10) as smtp:
        smtp.starttls(context=ctx)
        smtp.ehlo()
        assert smtp.has_extn("auth")
        smtp.mail("alice@test.local")
        code, _ = smtp.rcpt("bob@test.local")
        assert code == 554  # relay access denied without AUTH
    with smtplib.SMTP(mail_stack.host, mail_stack.submission_port, timeout=10) as smtp:
        smtp.starttls(context=ctx)
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            smtp.login("alice@test.local", "wrong")
        assert err.value.smtp_code == 535
    subject = f"submitted {uuid.uuid4().hex}"
    with smtplib.SMTP(mail_stack.host, mail_stack.submission_port, timeout=10) as smtp:
        smtp.starttls(context=ctx)
        smtp.login("alice@test.local", "alicepass")
        smtp.sendmail("alice@test.local", ["bob@test.local"], _message(subject, "bob@test.local"))
    client = mail_stack.imap_client("bob")
    try:
        _wait_for_subject(client, subject)
    finally:
        client.logout()


def test_recipient_block_answers_4xx_then_lifts(mail_stack: MailStack) -> None:
    raw = _message("blocked?", "carol@test.local")
    mail_stack.set_recipient_block("carol@test.local", "450 4.2.0 try later")
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
            mail_stack.deliver(raw, ["carol"], "bob@test.local")
        code, text = err.value.recipients["carol@test.local"]
        assert code == 450 and text.endswith(b"try later")
        # the same table guards the submission port
        mail_stack.set_recipient_block("dave", "550 5.1.1 no")
        with smtplib.SMTP(mail_stack.host, mail_stack.submission_port, timeout=10) as smtp:
            smtp.login("alice@test.local", "alicepass")
            smtp.mail("alice@test.local")
            assert smtp.rcpt("dave@test.local")[0] == 550
    finally:
        mail_stack.clear_recipient_blocks()
    mail_stack.deliver(raw, ["carol", "dave"], "bob@test.local")


def test_second_stack_runs_alongside_and_stops_cleanly(mail_stack: MailStack) -> None:
    root = Path("/tmp") / f"letterbox-second-{uuid.uuid4().hex[:8]}"
    other = MailStack(root, {"erin": "erinpass"})
    try:
        assert other.dovecot.instance_name != mail_stack.dovecot.instance_name
        with other:
            other.deliver(_message("to erin", "erin@test.local"), ["erin"], "x@test.local")
            client = other.imap_client("erin")
            try:
                _wait_for_subject(client, "to erin")
            finally:
                client.logout()
            pids = [other.dovecot.process.pid, other.postfix.process.pid]
        other.stop()  # idempotent
        for pid in pids:
            assert pid is not None
            assert not os.path.exists(f"/proc/{pid}") or "Z" in _proc_state(pid)
        assert not port_accepts(other.imap_port) and not port_accepts(other.smtp_port)
        assert port_accepts(mail_stack.imap_port)  # the session stack is untouched
    finally:
        other.stop()
        shutil.rmtree(root, ignore_errors=True)


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "Z"
    return stat[stat.rindex(")") + 2]


def test_busy_port_fails_with_a_clear_error(mail_stack: MailStack) -> None:
    root = Path("/tmp") / f"letterbox-busy-{uuid.uuid4().hex[:8]}"
    ports = MailPorts.allocate()
    clash = MailPorts(mail_stack.imap_port, ports.imaps, ports.lmtp, ports.smtp, ports.submission)
    try:
        with pytest.raises(ServerStartError, match="already in use"):
            MailStack(root, {"x": "xpass"}, ports=clash).start()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- synapse
def _get(url: str, token: str | None = None) -> dict[str, object]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, object] = json.loads(resp.read())
        return result


def test_synapse_answers_and_registers_users(
    synapse: Synapse, synapse_factory: SynapseFactory, bridge_setups: dict[str, BridgeSetup]
) -> None:
    assert synapse.hs_url == f"http://127.0.0.1:{synapse.port}"
    assert "versions" in _get(f"{synapse.hs_url}/_matrix/client/versions")
    name = f"u{uuid.uuid4().hex[:8]}"
    user_id, token = synapse.register_user(name, "secretpass", admin=True)
    assert user_id == f"@{name}:{synapse.server_name}"
    assert _get(f"{synapse.hs_url}/_matrix/client/v3/account/whoami", token)["user_id"] == user_id
    # the registrations were loaded: an appservice's as_token authenticates as its sender
    as_token = YAML(typ="safe").load(bridge_setups["email"].registration.read_text())["as_token"]
    whoami = _get(f"{synapse.hs_url}/_matrix/client/v3/account/whoami", as_token)
    assert whoami["user_id"] == "@letterboxbot:localhost"
    # the same list again (the bridges' and their double-puppeting registrations): no restart
    assert synapse_factory(list(synapse.registrations)) is synapse  # started once per session


# ---------------------------------------------------------------- oauth issuer process
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _post_form(url: str, form: dict[str, str]) -> dict[str, object]:
    with urllib.request.urlopen(url, urlencode(form).encode(), timeout=10) as resp:
        result: dict[str, object] = json.loads(resp.read())
        return result


def _sign_in(issuer: IssuerAddress, subject: str) -> str:
    """The browser and the client at `issuer` (code with PKCE); returns an access token."""
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    redirect = "http://127.0.0.1/callback"
    query = urlencode({"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": redirect,
                       "state": "s", "code_challenge": challenge.decode(),
                       "code_challenge_method": "S256"})
    request = urllib.request.Request(f"{issuer.authorize_url}?{query}", headers={
        "Authorization": "Basic " + base64.b64encode(f"{subject}:x".encode()).decode()})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.build_opener(_NoRedirect).open(request, timeout=10)
    answer.value.close()
    assert answer.value.code == 302
    code = parse_qs(urlsplit(answer.value.headers["Location"]).query)["code"][0]
    tokens = _post_form(issuer.token_url, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
        "code_verifier": verifier, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    return str(tokens["access_token"])


def test_the_issuer_process_keeps_its_grants_across_a_restart(tmp_path: Path) -> None:
    service = IssuerService(tmp_path, free_port())
    service.start()
    try:
        token = _sign_in(service.address, "carol@test.local")
        service.stop()
        assert not port_accepts(service.port)
        service.start()
        answer = _post_form(service.address.introspection_url, {"token": token})
        assert answer["active"] is True and answer["username"] == "carol@test.local"
    finally:
        service.stop()
    assert not service.process.pid_file.exists()


# ---------------------------------------------------------------- postgres
async def test_postgres_dsn_connects(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        name = await conn.fetchval("SELECT current_database()")
        assert postgres_dsn.endswith(f"/{name}") and name.startswith("letterbox_test_")
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (1)")
        assert await conn.fetchval("SELECT count(*) FROM t") == 1
    finally:
        await conn.close()


def test_rig_ports_are_never_ones_an_outgoing_connection_could_be_given() -> None:
    """A listener the rig closes and opens again (the appservice port of a session's bridges)
    must not find its port taken by a client connection's local port meanwhile."""
    low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = free_ports(200)
    assert len(set(ports)) == 200
    assert not [p for p in ports if low <= p <= high]
