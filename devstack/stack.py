"""High-level handles for the loopback servers: MailStack (Dovecot + Postfix) and Synapse."""

from __future__ import annotations

import imaplib
import os
from pathlib import Path
import re
import smtplib
import ssl
import time
from types import TracebackType
from typing import Self

from .errors import DevstackError
from .mail import (
    DEFAULT_DOMAIN,
    Dovecot,
    MailPorts,
    Postfix,
    check_users,
    prepare_root,
    require_mail_binaries,
    wait_for_rcpt,
)
from .oauth_issuer import IssuerAddress, IssuerEndpoints, OAuthIssuer
from .ports import LOOPBACK, free_port
from .postfix_log import Submission, submissions
from .process import ServerProcess, ensure_ports_free, stop_all
from .synapse import (
    DEFAULT_SERVER_NAME,
    SynapseSecrets,
    homeserver_yaml,
    log_config_yaml,
    login,
    register_user,
    require_synapse,
    versions_answer,
)
from .tls import ensure_tls


class MailStack:
    """Dovecot + Postfix on 127.0.0.1, all state under `root`.

    Ports (attributes): `imap_port` (STARTTLS), `imaps_port`, `lmtp_port`, `smtp_port`
    (no auth, for test delivery), `submission_port` (AUTH via Dovecot, STARTTLS offered).
    `ca_file` is the CA that signed the servers' certificate. `users` maps local part to
    password; addresses are `<local>@<domain>`. OAuth bearer tokens are checked at `issuer`, an
    issuer in this process on a free port started with the servers, unless `issuer_url` names one
    running elsewhere (the demo's issuer process); `issuer_endpoints` is whichever Dovecot asks.
    """

    host = LOOPBACK

    def __init__(
        self,
        root: Path,
        users: dict[str, str],
        *,
        ports: MailPorts | None = None,
        domain: str = DEFAULT_DOMAIN,
        issuer_url: str | None = None,
    ) -> None:
        require_mail_binaries()
        if os.geteuid() != 0:
            raise DevstackError("the mail servers' masters must run as root")
        check_users(users)
        self.root = Path(root).resolve()
        self.layout = prepare_root(self.root)
        self.domain = domain
        self.users = dict(users)
        self.ports = ports or MailPorts.allocate()
        self.tls = ensure_tls(self.layout.tls, [f"mail.{domain}"])
        # the mail provider's sign-in service; Dovecot asks it about every OAuth bearer token
        self.issuer = OAuthIssuer()
        self._own_issuer = issuer_url is None
        self.issuer_endpoints: IssuerEndpoints = (
            self.issuer if issuer_url is None else IssuerAddress(issuer_url)
        )
        self.dovecot = Dovecot(
            self.layout, self.ports, domain, self.users, self.tls, self.issuer_endpoints
        )
        self.postfix = Postfix(self.layout, self.ports, domain, self.users, self.tls)
        self._blocks: dict[str, str] = {}

    # ------------------------------------------------------------ attributes
    @property
    def imap_port(self) -> int:
        return self.ports.imap

    @property
    def imaps_port(self) -> int:
        return self.ports.imaps

    @property
    def lmtp_port(self) -> int:
        return self.ports.lmtp

    @property
    def smtp_port(self) -> int:
        return self.ports.smtp

    @property
    def submission_port(self) -> int:
        return self.ports.submission

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    @property
    def lmtp_socket(self) -> Path:
        return self.layout.lmtp_socket

    @property
    def log_dir(self) -> Path:
        return self.layout.logs

    def address(self, user: str) -> str:
        """`alice` -> `alice@test.local` (full addresses are returned unchanged)."""
        return user if "@" in user else f"{user}@{self.domain}"

    def password(self, user: str) -> str:
        local = user.split("@", 1)[0]
        try:
            return self.users[local]
        except KeyError:
            raise DevstackError(f"no mail user {local!r} in this stack") from None

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this stack's CA (hostname checks on)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Write configs and start both servers (no-op for ones already running)."""
        try:
            if self._own_issuer:
                self.issuer.start()
            self.dovecot.write_config()
            self.postfix.write_config()
            self.dovecot.start()
            self.postfix.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop both servers and the issuer (idempotent)."""
        stop_all([self.postfix.process, self.dovecot.process])
        self.issuer.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ test helpers
    def deliver(self, raw: bytes, to: list[str], mail_from: str) -> None:
        """Send `raw` through the no-auth SMTP port; raises smtplib errors on refusal."""
        with smtplib.SMTP(self.host, self.smtp_port, timeout=30) as smtp:
            smtp.sendmail(mail_from, [self.address(t) for t in to], raw)

    def imap_client(self, user: str) -> imaplib.IMAP4:
        """A logged-in IMAP4 connection (STARTTLS, certificate verified against `ca_file`).

        The caller logs out / closes it.
        """
        client = imaplib.IMAP4(self.host, self.imap_port, timeout=30)
        try:
            client.starttls(ssl_context=self.ssl_context())
            client.login(self.address(user), self.password(user))
        except BaseException:
            client.shutdown()
            raise
        return client

    def add_user(self, local: str, password: str) -> str:
        """Create a mailbox while the servers run; returns once Postfix and Dovecot accept it."""
        return self.add_users({local: password})[0]

    def add_users(self, users: dict[str, str]) -> list[str]:
        """Create mailboxes (local part -> password) while the servers run, with one reload of
        each server however many; returns their addresses once Postfix and Dovecot accept the
        last one."""
        check_users(users)
        self.users.update(users)
        self.dovecot.write_config()  # Dovecot re-reads its passwd-file when it changes
        self.postfix.write_config()
        self.postfix.reload()
        addresses = [self.address(local) for local in users]
        last = list(users)[-1]
        for _ in range(100):
            if self.postfix.probe_rcpt(self.address(last))[0] == 250:
                break
            time.sleep(0.05)
        else:
            raise DevstackError(f"Postfix does not accept mail for the new user {self.address(last)}")
        self._wait_for_login(last)
        return addresses

    def restart_dovecot(self, down_s: float = 0.0) -> float:
        """Stop Dovecot (clients see their connections closed), keep it down for `down_s`, start
        it again; returns time.monotonic() when it accepts connections again."""
        self.dovecot.process.stop()
        time.sleep(down_s)
        self.dovecot.start()
        return time.monotonic()

    def restart_postfix(self) -> None:
        """Stop Postfix (its SMTP sessions are closed) and start it again; returns once it
        greets again."""
        self.postfix.process.stop()
        # the smtpd processes of open sessions outlive the master: they would serve on
        self.postfix.kill_leftovers()
        self.postfix.start()

    def submissions(self, user: str) -> list[Submission]:
        """The mails `user` submitted on the submission port so far (from Postfix's log)."""
        return submissions(self.postfix_log(), self.address(user))

    def postfix_log(self) -> str:
        try:
            return self.postfix.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def new_uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        """Give `folder` a new UIDVALIDITY (greater than the old one); returns it."""
        client = self.imap_client(user)
        try:
            status, data = client.status(f'"{folder}"', "(UIDVALIDITY)")
            assert status == "OK", data
            old = int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))  # type: ignore[union-attr]
        finally:
            client.logout()
        self.dovecot.set_uidvalidity(self.address(user), folder, old + 1)
        return old + 1

    def empty_mailbox(self, user: str) -> None:
        """Delete every message and every folder but the auto-created INBOX, Sent and Trash."""
        keep = ("INBOX", "Sent", "Trash")
        client = self.imap_client(user)
        try:
            _, listing = client.list()
            names = [re.sub(r'^\(.*?\) "/" ', "", raw.decode()).strip('"') for raw in listing if raw]
            for name in sorted(names, key=len, reverse=True):
                if name not in keep:
                    client.delete(f'"{name}"')
            for box in keep:
                _, data = client.select(box)
                if int(data[0]):
                    client.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
                    client.expunge()
        finally:
            client.logout()

    def set_password(self, local: str, password: str) -> None:
        """Change a mailbox's password; returns once Dovecot accepts the new one."""
        check_users({local: password})
        self.users[local] = password
        self.dovecot.write_config()
        self._wait_for_login(local)

    def _wait_for_login(self, local: str) -> None:
        # Dovecot re-reads its passwd-file at most once a second: poll a real login.
        for _ in range(100):
            try:
                self.imap_client(local).logout()
                return
            except imaplib.IMAP4.error:
                time.sleep(0.05)
        raise DevstackError(f"Dovecot does not accept the password of {local}")

    def set_recipient_block(self, address: str, code_and_text: str) -> None:
        """Make Postfix answer RCPT TO:<address> with e.g. `450 4.2.0 try later`.

        Applies to the SMTP and the submission port, to sessions open now too (see
        `_apply_blocks`); returns once Postfix answers that way.
        """
        code = code_and_text[:3]
        if not (code.isdigit() and code[0] in "45" and code_and_text[3:4] == " "):
            raise DevstackError(f"block must start with a 4xx/5xx code: {code_and_text!r}")
        address = self.address(address).lower()
        self._blocks[address] = code_and_text
        self._apply_blocks()
        wait_for_rcpt(self.postfix, address, code_and_text, blocked=True)

    def clear_recipient_blocks(self) -> None:
        """Remove all recipient blocks; returns once Postfix no longer applies them."""
        old = self._blocks
        self._blocks = {}
        if not old:
            return
        self._apply_blocks()
        for address, code_and_text in old.items():
            wait_for_rcpt(self.postfix, address, code_and_text, blocked=False)

    def _apply_blocks(self) -> None:
        """A reload reaches new sessions only: a running smtpd keeps the tables it loaded for as
        long as its session lasts. With a session open (a client that keeps one between mails),
        Postfix restarts instead, as a server that applies new rules to every client would:
        the client sees its session closed and opens a new one."""
        self.postfix.write_recipient_access(self._blocks)
        if self.postfix.serving_sessions():
            self.restart_postfix()
        else:
            self.postfix.reload()


class Synapse:
    """A Synapse homeserver on 127.0.0.1 (SQLite, client API only), state under `root/synapse`.

    `registrations` are appservice registration files passed as `app_service_config_files`;
    they must exist when start() runs. Secrets persist in the root, so a restart keeps users.
    """

    host = LOOPBACK

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        server_name: str = DEFAULT_SERVER_NAME,
        registrations: list[Path] | tuple[Path, ...] = (),
        log_level: str = "INFO",
        max_upload_size: str = "50M",
    ) -> None:
        self.python = require_synapse()
        self.max_upload_size = max_upload_size
        self.root = Path(root).resolve()
        self.directory = self.root / "synapse"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.server_name = server_name
        self.registrations = [Path(p).resolve() for p in registrations]
        self.log_level = log_level
        self.secrets = SynapseSecrets.load_or_create(self.directory / "secrets.json")
        self.config_path = self.directory / "homeserver.yaml"
        self.log_file = self.root / "logs" / "synapse.log"
        self.process = ServerProcess(
            "synapse", self.root / "run" / "synapse.pid", str(self.config_path), [self.log_file]
        )

    @property
    def hs_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def registration_shared_secret(self) -> str:
        return self.secrets.registration_shared_secret

    def _config_text(self) -> str:
        return homeserver_yaml(
            self.directory, self.port, self.server_name, self.registrations, self.secrets,
            self.max_upload_size,
        )

    def write_config(self) -> None:
        (self.directory / "media_store").mkdir(exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        (self.directory / "log.config").write_text(log_config_yaml(self.log_file, self.log_level))
        self.config_path.write_text(self._config_text())

    def start(self) -> None:
        """Write the config and start Synapse; returns once the client API answers.

        If it is already running (PID file) with the same config this is a no-op; with a
        changed config (e.g. other registrations) it is restarted.
        """
        if self.process.load_pid():
            current = self.config_path.read_text() if self.config_path.is_file() else ""
            if current == self._config_text():
                return
            self.stop()
        missing = [p for p in self.registrations if not p.is_file()]
        if missing:
            raise DevstackError(f"appservice registration file(s) missing: {missing}")
        ensure_ports_free("synapse", [self.port])
        self.write_config()
        self.process.spawn(
            [self.python, "-m", "synapse.app.homeserver", "-c", self.config_path],
            self.root / "logs" / "synapse.stdout",
            cwd=self.directory,
        )
        try:
            self.process.wait_ready(
                lambda: versions_answer(self.hs_url), 90, "answer on /_matrix/client/versions"
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Synapse (idempotent)."""
        self.process.stop(timeout=15)

    def restart(self, registrations: list[Path] | None = None) -> None:
        """Stop and start again, optionally with a new list of registration files."""
        self.stop()
        if registrations is not None:
            self.registrations = [Path(p).resolve() for p in registrations]
        self.start()

    def register_user(self, name: str, password: str, admin: bool = False) -> tuple[str, str]:
        """Create a user with the shared-secret admin API; returns (user_id, access_token)."""
        return register_user(self.hs_url, self.registration_shared_secret, name, password, admin)

    def login(self, name: str, password: str) -> tuple[str, str]:
        """Password login for an existing user; returns (user_id, access_token)."""
        return login(self.hs_url, name, password)

    def user_id(self, name: str) -> str:
        return f"@{name}:{self.server_name}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
