"""Failover: mailboxes shared over several bridge worker processes, one of them SIGKILLed.

Run: `.venv/bin/python -m bench.failover [--quick] [--json-out PATH] [--mailboxes N]
[--workers N] [--lease S]`. Starts its own Dovecot + Postfix, Synapse and PostgreSQL on loopback,
runs the worker processes on one fresh PostgreSQL database (the first receives the homeserver's
transactions), logs a Matrix user in to each mailbox through the bot (the users spread over the
workers), then SIGKILLs the last worker and at once mails every mailbox and sends one Matrix
message from a user of the dead worker. Reports

 * `failover_s`: kill -> every login of the dead worker connected again by a live worker (the
   survivors' logs: "IMAP session for ... established"); the target is one lease period
   (`failover_lease_s`),
 * `failover_leases_s`: kill -> every user of the dead worker leased by a live worker,
 * `failover_served_s`: kill -> the mail sent at the kill reached the room of every mailbox the
   dead worker held,
 * `failover_lost`, `failover_duplicated`: tokens of the outage mails (every mailbox) and the
   Matrix message, counted in the rooms and the correspondent's INBOX as in the fault suite,
 * `failover_mailboxes`, `failover_workers`, `failover_moved` (mailboxes the dead worker held).

Full size is 40 mailboxes over 4 workers, `--quick` 12 over 2 (with `--mailboxes 100` on the
loaded machine, a bot reply in one of the log-ins took longer than the conversation allows). The issue's 2,000 mailboxes
need the rig's Dovecot limits raised and a faster way to make logins than one conversation with
the bot per mailbox (each takes seconds on the 2-core machine). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
import random
import shutil
import sys
import tempfile
import time
import uuid

from devstack.postgres import create_database, drop_database, ensure_postgres
from devstack.stack import MailStack, Synapse
from tests.helpers.faults.context import FaultContext
from tests.helpers.faults.failover import add_mailboxes, kill_one, start_fleet

from .env import email_setup, run_main, step
from .output import Figure, output_arguments, write_figures

FULL = (40, 4)
QUICK = (12, 2)
LEASE_S = 10.0


def _make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="letterbox-failover-", dir="/tmp"))
    root.chmod(0o755)  # the mail and postfix users must be able to enter it
    return root


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    output_arguments(p)
    p.add_argument("--mailboxes", type=int, help="mailboxes (default 40, quick 12)")
    p.add_argument("--workers", type=int, help="worker processes (default 4, quick 2)")
    p.add_argument("--lease", type=float, default=LEASE_S,
                   help=f"workers.lease_seconds (default {LEASE_S:.0f})")
    p.add_argument("--keep", action="store_true", help="keep the temp root (configs and logs)")
    args = p.parse_args(argv)
    mailboxes, workers = QUICK if args.quick else FULL
    args.mailboxes = args.mailboxes or mailboxes
    args.workers = args.workers or workers
    return args


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Figure]:
    async with AsyncExitStack() as stack:
        # Every mailbox made with the servers' first start (adding one later reloads Postfix).
        users = {f"fo{n:05d}": f"pw-fo{n:05d}" for n in range(args.mailboxes)}
        mail = MailStack(root / "mail", users)
        stack.callback(mail.stop)
        await asyncio.to_thread(mail.start)
        setup = email_setup(root / "bridge")
        synapse = Synapse(root / "synapse", registrations=[setup.registration])
        stack.callback(synapse.stop)
        await asyncio.to_thread(synapse.start)
        pg = await asyncio.to_thread(ensure_postgres, root / "pg")
        stack.callback(pg.stop)
        db_url = await asyncio.to_thread(create_database, pg.dsn,
                                         f"letterbox_failover_{uuid.uuid4().hex[:12]}")
        stack.callback(drop_database, pg.dsn, db_url.rsplit("/", 1)[1])
        work = root / "run"
        work.mkdir()
        ctx = FaultContext(mail, synapse, setup, db_url, work, random.Random(1), pg_admin_dsn=pg.dsn)
        stack.push_async_callback(ctx.close)
        step(f"servers up; {args.workers} workers, lease {args.lease:.0f} s")
        fleet = await start_fleet(ctx, args.workers, args.lease)
        step(f"workers started; logging in {args.mailboxes} mailboxes")
        started = time.monotonic()
        await add_mailboxes(fleet, args.mailboxes, concurrency=8,
                            mailboxes=[(mail.address(u), p) for u, p in users.items()])
        step(f"{args.mailboxes} mailboxes logged in and served ({time.monotonic() - started:.0f} s)")
        holders = await fleet.wait_for_holders(
            lambda h: len(h) == args.mailboxes and set(h.values()) == set(fleet.ids), 120)
        spread = {w: list(holders.values()).count(w) for w in fleet.ids}
        step(f"mailboxes per worker: {spread}; killing {fleet.ids[-1]}")
        result = await kill_one(fleet, timeout=max(120.0, 4 * args.lease))
        step(f"{result.moved} mailboxes of {result.killed}: leased again after "
             f"{result.leases_s:.1f} s, connected after {result.connected_s:.1f} s, mail in "
             f"Matrix after {result.served_s:.1f} s; lost {result.lost}, duplicated "
             f"{result.duplicated}")
        return {
            "failover_s": round(result.connected_s, 2),
            "failover_leases_s": round(result.leases_s, 2),
            "failover_served_s": round(result.served_s, 2),
            "failover_lost": result.lost,
            "failover_duplicated": result.duplicated,
            "failover_lease_s": args.lease,
            "failover_mailboxes": args.mailboxes,
            "failover_workers": args.workers,
            "failover_moved": result.moved,
        }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    figures: dict[str, Figure] = {}

    async def run() -> None:
        root = await asyncio.to_thread(_make_root)
        try:
            figures.update(await measure(args, root))
        finally:
            if args.keep:
                print(f"kept {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)

    status = run_main(run)
    for key, value in figures.items():
        print(f"{key}: {value}")
    write_figures(args.json_out, figures)
    return status


if __name__ == "__main__":
    sys.exit(main())
