"""Dovecot (IMAP, LMTP, SASL) and Postfix (SMTP, submission): private instances under a root."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import hashlib
import os
from pathlib import Path
import shutil
import signal
import smtplib
import subprocess
import time

from .errors import DevstackError, MissingBinaryError
from .oauth_issuer import IssuerEndpoints
from .ports import LOOPBACK, free_ports
from .process import ServerProcess, banner_check, ensure_ports_free
from .tls import TlsFiles

DOVECOT = Path("/usr/sbin/dovecot")
# concurrent IMAP sessions the rig allows (one imap process each), and connections per service
PROCESS_LIMIT = 5000
CLIENT_LIMIT = 12000
DOVEADM = Path("/usr/bin/doveadm")
POSTFIX = Path("/usr/sbin/postfix")
DEFAULT_DOMAIN = "test.local"


def require_mail_binaries() -> None:
    """Raise MissingBinaryError unless Dovecot and Postfix are installed."""
    for binary in (DOVECOT, POSTFIX):
        if not os.access(binary, os.X_OK):
            raise MissingBinaryError(str(binary))


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """Atomically write `text` to `path` when it differs; True if written.

    The mtime is set 10 s into the past: Postfix re-reads a config file or texthash table
    in 300 ms steps until its mtime is 2 s old (it guards against half-written files), which
    cost ~2.5 s per `postfix check` and per reload.
    """
    if path.is_file() and path.read_text() == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    past = time.time() - 10
    os.utime(tmp, (past, past))
    tmp.replace(path)
    return True


@dataclass(frozen=True)
class MailPorts:
    """TCP ports on 127.0.0.1 used by one mail stack."""

    imap: int
    imaps: int
    lmtp: int
    smtp: int
    submission: int

    @classmethod
    def allocate(cls) -> MailPorts:
        """Five currently free loopback ports."""
        return cls(*free_ports(5))


@dataclass(frozen=True)
class MailLayout:
    """Where the mail servers keep their files under a root dir."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def dovecot(self) -> Path:
        return self.root / "dovecot"

    @property
    def dovecot_base(self) -> Path:
        """Dovecot's base_dir: sockets (lmtp, auth-postfix) live here."""
        return self.dovecot / "run"

    @property
    def maildirs(self) -> Path:
        return self.root / "mail"

    @property
    def postfix(self) -> Path:
        """Postfix config_directory (root-owned, config files only)."""
        return self.root / "postfix"

    @property
    def postfix_spool(self) -> Path:
        return self.root / "postfix-spool"

    @property
    def postfix_data(self) -> Path:
        return self.root / "postfix-data"

    @property
    def lmtp_socket(self) -> Path:
        return self.dovecot_base / "lmtp"

    @property
    def recipient_access(self) -> Path:
        return self.postfix / "recipient_access"


def check_users(users: dict[str, str]) -> None:
    """Reject user names/passwords that cannot go into the passwd-file."""
    for local, password in users.items():
        if not local or any(c in local for c in ":@ \t\n") or any(c in password for c in ":\n"):
            raise DevstackError(f"unsupported mail user or password for {local!r}")


def _traversable(path: Path) -> None:
    """Mail files are accessed by the mail/dovecot/postfix users: every parent must be o+x."""
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise DevstackError(
                f"{parent} is not traversable by other users (mode "
                f"{oct(parent.stat().st_mode & 0o777)}); use a root dir like /tmp/xyz"
            )


class Dovecot:
    """A private Dovecot instance: IMAP (STARTTLS) + IMAPS + LMTP + SASL socket for Postfix."""

    def __init__(
        self,
        layout: MailLayout,
        ports: MailPorts,
        domain: str,
        users: dict[str, str],
        tls: TlsFiles,
        issuer: IssuerEndpoints,
    ) -> None:
        self.layout = layout
        self.ports = ports
        self.domain = domain
        self.users = users
        self.tls = tls
        self.issuer = issuer
        self.config = layout.dovecot / "dovecot.conf"
        self.log_file = layout.logs / "dovecot.log"
        self.instance_name = "letterbox-" + hashlib.sha1(str(layout.root).encode()).hexdigest()[:10]
        self.process = ServerProcess(
            "dovecot", layout.run / "dovecot.pid", marker=str(self.config), logs=[self.log_file]
        )

    def write_config(self) -> None:
        lay = self.layout
        for d in (lay.dovecot, lay.dovecot_base, lay.dovecot / "state", lay.logs, lay.run):
            d.mkdir(parents=True, exist_ok=True)
        lay.maildirs.mkdir(exist_ok=True)
        shutil.chown(lay.maildirs, "mail", "mail")
        lay.maildirs.chmod(0o750)
        users_file = lay.dovecot / "users"
        write_if_changed(
            users_file,
            "".join(f"{u}@{self.domain}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items()),
            0o640,
        )
        shutil.chown(users_file, "root", "dovecot")
        write_if_changed(self.layout.dovecot / "oauth2.conf", self._oauth2_text())
        write_if_changed(self.config, self._config_text())

    def _oauth2_text(self) -> str:
        # RFC 7662 introspection of every bearer token at the rig's issuer (devstack.oauth_issuer)
        return f"""\
introspection_mode = post
introspection_url = {self.issuer.introspection_url}
username_attribute = username
active_attribute = active
active_value = true
"""

    def _config_text(self) -> str:
        lay, p = self.layout, self.ports
        return f"""\
# Private Dovecot instance written by devstack; /etc/dovecot is not read.
instance_name = {self.instance_name}
base_dir = {lay.dovecot_base}
state_dir = {lay.dovecot / "state"}
protocols = imap lmtp
listen = {LOOPBACK}
hostname = mail.{self.domain}
postmaster_address = postmaster@{self.domain}
log_path = {self.log_file}
info_log_path = {self.log_file}
ssl = yes
ssl_cert = <{self.tls.cert_file}
ssl_key = <{self.tls.key_file}
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
# tests try wrong passwords: no failure delay, no per-IP penalty (see anvil below)
auth_failure_delay = 0
# every mailbox belongs to Debian's 'mail' user (uid/gid 8)
first_valid_uid = 8
last_valid_uid = 8
first_valid_gid = 8
last_valid_gid = 8
mail_location = maildir:{lay.maildirs}/%d/%n/Maildir
mail_fsync = never
# thousands of concurrent sessions (benchmarks of many idle mailboxes): Dovecot's default of 100
# processes per service caps logins at 100. Each IMAP session is one imap process; the TLS of
# many sessions is carried by a few long-lived imap-login processes.
default_client_limit = {CLIENT_LIMIT}
# process titles show each session's user and state ("IDLE"): benchmarks watch them
verbose_proctitle = yes
# passwords for PLAIN/LOGIN and for lookups without a login (LMTP's "none"); OAuth bearer tokens
# are checked by the rig's issuer (token introspection)
passdb {{
  driver = passwd-file
  mechanisms = plain login none
  args = scheme=PLAIN username_format=%u {lay.dovecot / "users"}
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {lay.dovecot / "oauth2.conf"}
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={lay.maildirs}/%d/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
}}
service imap {{
  process_limit = {PROCESS_LIMIT}
}}
service imap-login {{
  service_count = 0
  process_min_avail = 2
  inet_listener imap {{
    address = {LOOPBACK}
    port = {p.imap}
  }}
  inet_listener imaps {{
    address = {LOOPBACK}
    port = {p.imaps}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = {LOOPBACK}
    port = {p.lmtp}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""

    def start(self) -> None:
        if self.process.load_pid():
            return
        ensure_ports_free("dovecot", [self.ports.imap, self.ports.imaps, self.ports.lmtp])
        # with the penalty listener disabled, a stale socket makes auth retry for ~5 s
        (self.layout.dovecot_base / "anvil-auth-penalty").unlink(missing_ok=True)
        self.process.spawn([DOVECOT, "-F", "-c", self.config], self.layout.logs / "dovecot.stdout")
        self.process.wait_ready(banner_check(self.ports.imap, b"* OK"), 20, "IMAP banner")

    def set_uidvalidity(self, address: str, folder: str, uidvalidity: int) -> None:
        """Give `folder` of `address` a new UIDVALIDITY (`doveadm mailbox update`), as a server
        does after rebuilding its index: every client must forget the UIDs it knew."""
        res = subprocess.run(
            [os.fspath(DOVEADM), "-c", os.fspath(self.config), "mailbox", "update", "-u", address,
             "--uid-validity", str(uidvalidity), folder],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        )
        if res.returncode != 0:
            raise DevstackError(f"doveadm mailbox update failed: {res.stderr.strip() or res.stdout}")


class Postfix:
    """A private Postfix instance: no-auth SMTP for 127.0.0.1 and a SASL submission port."""

    def __init__(
        self,
        layout: MailLayout,
        ports: MailPorts,
        domain: str,
        users: dict[str, str],
        tls: TlsFiles,
    ) -> None:
        self.layout = layout
        self.ports = ports
        self.domain = domain
        self.users = users
        self.tls = tls
        self.log_file = layout.logs / "postfix.log"
        self.process = ServerProcess(
            "postfix",
            layout.run / "postfix.pid",
            # postfix-script exports MAIL_CONFIG=<config dir> to the master
            marker=f"MAIL_CONFIG={layout.postfix}",
            logs=[self.log_file],
        )

    def write_config(self) -> None:
        lay = self.layout
        for d in (lay.postfix, lay.postfix_spool, lay.logs, lay.run):
            d.mkdir(parents=True, exist_ok=True)
        for d in (lay.postfix, lay.postfix_spool):
            shutil.chown(d, "root", "root")
            d.chmod(0o755)
        lay.postfix_data.mkdir(exist_ok=True)
        shutil.chown(lay.postfix_data, "postfix", "postfix")
        write_if_changed(
            lay.postfix / "vmailbox", "".join(f"{u}@{self.domain} OK\n" for u in self.users)
        )
        if not lay.recipient_access.exists():
            write_if_changed(lay.recipient_access, "")
        changed = write_if_changed(lay.postfix / "main.cf", self._main_cf())
        changed |= write_if_changed(lay.postfix / "master.cf", self._master_cf())
        if changed or not (lay.postfix_spool / "pid").is_dir():
            # post-install checks; also creates the queue sub-directories with the right owners
            self._postfix("check")

    def _main_cf(self) -> str:
        lay = self.layout
        access = f"check_recipient_access texthash:{lay.recipient_access}"
        return f"""\
# Private Postfix instance written by devstack (postfix -c {lay.postfix}).
compatibility_level = 3.6
queue_directory = {lay.postfix_spool}
data_directory = {lay.postfix_data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.{self.domain}
mydomain = {self.domain}
myorigin = $mydomain
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.1/32
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = {access}, permit_mynetworks, permit_sasl_authenticated,
  reject_unauth_destination
submission_recipient_restrictions = {access}, permit_sasl_authenticated, reject
virtual_mailbox_domains = {self.domain}
virtual_mailbox_maps = texthash:{lay.postfix / "vmailbox"}
virtual_transport = lmtp:unix:{lay.lmtp_socket}
# nothing leaves the machine
default_transport = error:outbound delivery disabled in test setup
relay_transport = error:outbound delivery disabled in test setup
# no syslog here: postlogd writes this file
maillog_file_prefixes = {lay.logs}
maillog_file = {self.log_file}
# the client's port next to its address: tells one SMTP session from another
smtpd_client_port_logging = yes
smtputf8_enable = no
biff = no
append_dot_mydomain = no
message_size_limit = 52428800
smtpd_banner = $myhostname ESMTP test
smtpd_tls_chain_files = {self.tls.key_file}, {self.tls.cert_file}
smtpd_tls_security_level = none
smtpd_sasl_type = dovecot
smtpd_sasl_path = {lay.dovecot_base / "auth-postfix"}
smtpd_sasl_auth_enable = no
"""

    def _master_cf(self) -> str:
        p = self.ports
        services = [
            ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
            ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
            ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
            ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
            ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
            ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
            ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
            ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
            ("error", "unix", "-", "-", "n", "-", "-", "error"),
            ("retry", "unix", "-", "-", "n", "-", "-", "error"),
            ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
            ("lmtp", "unix", "-", "-", "n", "-", "-", "lmtp"),
            ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
        ]
        lines = [
            "# service type private unpriv chroot wakeup maxproc command",
            f"{LOOPBACK}:{p.smtp} inet n - n - - smtpd",
            f"{LOOPBACK}:{p.submission} inet n - n - - smtpd",
            "  -o syslog_name=postfix/submission",
            "  -o smtpd_tls_security_level=may",
            "  -o smtpd_tls_auth_only=no",
            "  -o smtpd_sasl_auth_enable=yes",
            "  -o smtpd_client_restrictions=",
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject",
            "  -o smtpd_recipient_restrictions=$submission_recipient_restrictions",
        ]
        lines += [" ".join(s) for s in services]
        return "\n".join(lines) + "\n"

    def _postfix(self, *args: str) -> None:
        res = subprocess.run(
            [os.fspath(POSTFIX), "-c", os.fspath(self.layout.postfix), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            # Postfix reports problems to its log file, not to stdout
            output = f"{res.stdout}{res.stderr}".strip()
            raise self.process.fail(f"'postfix {' '.join(args)}' exited {res.returncode}: {output}")

    def start(self) -> None:
        if self.process.load_pid():
            return
        ensure_ports_free("postfix", [self.ports.smtp, self.ports.submission])
        master_pid = self.layout.postfix_spool / "pid" / "master.pid"
        master_pid.unlink(missing_ok=True)
        # start-fg runs the master under a small sh wrapper; we track the master's PID
        self.process.spawn(
            [POSTFIX, "-c", self.layout.postfix, "start-fg"], self.layout.logs / "postfix.stdout"
        )
        self.process.wait_ready(banner_check(self.ports.smtp, b"220"), 20, "SMTP banner")
        self.process.wait_ready(lambda: _read_pid(master_pid) is not None, 5, "master.pid")
        pid = _read_pid(master_pid)
        assert pid is not None
        self.process.set_pid(pid)

    def reload(self) -> None:
        """Make the running master re-read its config and tables (`postfix reload`)."""
        self._postfix("reload")

    def kill_leftovers(self) -> None:
        """SIGKILL the processes that still listen on this Postfix's ports after its master
        stopped: smtpd processes of open sessions outlive the master and keep its sockets."""
        listening = _established_sockets({self.ports.smtp, self.ports.submission}, "0A")
        for pid in _holders(listening) if listening else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _established_sockets({self.ports.smtp, self.ports.submission}, "0A"):
            if time.monotonic() > deadline:
                raise self.process.fail("processes of the stopped Postfix keep its ports")
            time.sleep(0.02)

    def serving_sessions(self) -> bool:
        """Whether a client has an SMTP session open with this Postfix (either port)."""
        return bool(_established_sockets({self.ports.smtp, self.ports.submission}))

    # ------------------------------------------------------------ recipient blocks
    def write_recipient_access(self, blocks: dict[str, str]) -> None:
        write_if_changed(
            self.layout.recipient_access, "".join(f"{a} {r}\n" for a, r in blocks.items())
        )

    def probe_rcpt(self, address: str) -> tuple[int, str]:
        """Ask the no-auth SMTP port what it answers to RCPT TO:<address> (no mail is sent)."""
        with smtplib.SMTP(LOOPBACK, self.ports.smtp, timeout=10) as smtp:
            smtp.ehlo("probe.localhost")
            smtp.mail(f"probe@{self.domain}")
            code, msg = smtp.rcpt(address)
            smtp.rset()
        return code, msg.decode(errors="replace")


def _established_sockets(ports: set[int], state: str = "01") -> set[str]:
    """Inodes of the IPv4 TCP sockets on one of the local `ports` in `state` (01: established
    connections, 0A: listening)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if fields[3] == state and local_port in ports:
            found.add(fields[9])
    return found


def _holders(inodes: set[str]) -> set[int]:
    """PIDs of the processes that have one of the sockets `inodes` open."""
    wanted = {f"socket:[{i}]" for i in inodes}
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in wanted for fd in (entry / "fd").iterdir()):
                pids.add(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return pids


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def block_matches(reply: tuple[int, str], code_and_text: str) -> bool:
    """Does an SMTP reply come from a recipient_access entry like '450 4.2.0 try later'?"""
    code, msg = reply
    want_code, _, rest = code_and_text.partition(" ")
    text = rest.split(" ", 1)[1] if rest[:1].isdigit() and " " in rest else rest
    return str(code) == want_code and msg.rstrip().endswith(text.strip())


def wait_for_rcpt(postfix: Postfix, address: str, code_and_text: str, blocked: bool) -> None:
    """Poll until Postfix's reply to `address` does (or no longer does) match the block."""
    deadline = time.monotonic() + 10
    while True:
        reply = postfix.probe_rcpt(address)
        if block_matches(reply, code_and_text) == blocked:
            return
        if time.monotonic() > deadline:
            state = "apply" if blocked else "lift"
            raise DevstackError(
                f"postfix did not {state} recipient block {address!r} -> {code_and_text!r};"
                f" last reply {reply}"
            )
        time.sleep(0.05)


def prepare_root(root: Path) -> MailLayout:
    """Create `root` (mode 755) and check that service users can traverse to it."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    _traversable(root)
    return MailLayout(root)
