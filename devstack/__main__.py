"""Demo stack on fixed ports.

python -m devstack up|down|status --root DIR [--registration PATH ...]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import time

from .errors import DevstackError, MatrixAdminError
from .issuer_service import IssuerService
from .mail import MailPorts
from .oauth_issuer import issuer_url
from .postgres import ensure_database, ensure_postgres, stop_private_postgres
from .process import ServerProcess
from .stack import MailStack, Synapse

SYNAPSE_PORT = 28008
MAIL_PORTS = MailPorts(imap=20143, imaps=20993, lmtp=20024, smtp=20025, submission=20587)
OAUTH_PORT = 20080  # the rig's OAuth issuer (devstack.oauth_issuer) as a process of its own
POSTGRES_PORT = 20432  # only used when nothing answers on 127.0.0.1:5432
DEMO_DATABASE = "letterbox_demo"
MAIL_USERS = {"alice": "alicepass", "bob": "bobpass", "carol": "carolpass"}
MATRIX_USERS = [("admin", "adminpass", True), ("alice", "alicepass", False),
                ("carol", "carolpass", False)]


def _say(msg: str) -> None:
    print(f"[devstack] {msg}", flush=True)


def _mail(root: Path) -> MailStack:
    return MailStack(root, MAIL_USERS, ports=MAIL_PORTS, issuer_url=issuer_url(OAUTH_PORT))


def _issuer(root: Path) -> IssuerService:
    return IssuerService(root, OAUTH_PORT)


def up(root: Path, registrations: list[Path]) -> None:
    t0 = time.monotonic()
    issuer = _issuer(root)
    issuer.start()
    _say(f"oauth issuer up at {issuer.address.url}")
    mail = _mail(root)
    mail.start()
    _say(f"dovecot + postfix up ({time.monotonic() - t0:.1f} s)")
    pg = ensure_postgres(root, port=POSTGRES_PORT)
    db_dsn = ensure_database(pg.dsn, DEMO_DATABASE)
    _say(f"postgres: {db_dsn}" + (" (private cluster)" if pg.process else ""))
    synapse = Synapse(root, port=SYNAPSE_PORT, registrations=registrations)
    synapse.start()
    _say(f"synapse up at {synapse.hs_url} ({time.monotonic() - t0:.1f} s)")
    for name, password, admin in MATRIX_USERS:
        try:
            user_id, _ = synapse.register_user(name, password, admin=admin)
            _say(f"registered {user_id}" + (" (admin)" if admin else ""))
        except MatrixAdminError as exc:
            if exc.errcode != "M_USER_IN_USE":
                raise
            synapse.login(name, password)  # exists already: check the password still works
    env = root / "devstack.env"
    env.write_text(
        "".join(
            f"export {k}={v}\n"
            for k, v in {
                "MATRIX_HS_URL": synapse.hs_url,
                "MATRIX_SERVER_NAME": synapse.server_name,
                "MATRIX_REGISTRATION_SHARED_SECRET": synapse.registration_shared_secret,
                "IMAP_HOST": mail.host,
                "IMAP_PORT": mail.imap_port,
                "IMAPS_PORT": mail.imaps_port,
                "SMTP_PORT": mail.smtp_port,
                "SUBMISSION_PORT": mail.submission_port,
                "LMTP_PORT": mail.lmtp_port,
                "MAIL_DOMAIN": mail.domain,
                "OAUTH_ISSUER_URL": issuer.address.url,
                "TLS_CA_FILE": mail.ca_file,
                "DATABASE_URL": db_dsn,
            }.items()
        )
    )
    _say(f"all up in {time.monotonic() - t0:.1f} s; settings in {env}")


def _processes(root: Path) -> list[ServerProcess]:
    mail = _mail(root)
    return [
        Synapse(root, port=SYNAPSE_PORT).process,
        mail.postfix.process,
        mail.dovecot.process,
        _issuer(root).process,
    ]


def down(root: Path) -> None:
    if not root.is_dir():
        _say(f"{root} does not exist: nothing to stop")
        return
    procs = _processes(root)
    for proc in procs:
        proc.signal_stop()
    for proc in procs:
        pid = proc.pid
        proc.wait_stopped(timeout=15)
        if pid is not None:
            _say(f"stopped {proc.name} (pid {pid})")
    stop_private_postgres(root)


def status(root: Path) -> int:
    down_count = 0
    for proc in _processes(root) if root.is_dir() else []:
        if proc.load_pid():
            _say(f"{proc.name}: running, pid {proc.pid}")
        else:
            _say(f"{proc.name}: stopped")
            down_count += 1
    return 1 if down_count or not root.is_dir() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--root", type=Path, required=True, help="state directory")
    parser.add_argument(
        "--registration",
        type=Path,
        action="append",
        default=[],
        help="appservice registration file for Synapse (repeatable)",
    )
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    if os.geteuid() != 0 and args.command != "status":
        parser.error("must run as root (Dovecot and Postfix masters need it)")
    try:
        if args.command == "up":
            up(root, args.registration)
        elif args.command == "down":
            down(root)
        else:
            return status(root)
    except DevstackError as exc:
        _say(f"ERROR: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
