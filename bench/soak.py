"""The fault scenarios of the test suite, long: 200 kills each by default.

Run: `.venv/bin/python -m bench.soak [--kills 200] [--only NAME ...] [--db sqlite|postgres]
[--seed N] [--keep]`. Starts its own Dovecot + Postfix, Synapse and PostgreSQL (the local server
or a private cluster) on loopback, runs every scenario of tests/helpers/faults/scenarios.py on
each database it applies to (a fresh database each), and prints per scenario what was lost,
duplicated or out of order. Exit status 1 if any scenario was not clean.
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import AsyncExitStack
import os
from pathlib import Path
import random
import shutil
import sys
import tempfile
import time
import uuid

from devstack.postgres import PostgresServer, create_database, drop_database, ensure_postgres
from devstack.stack import MailStack, Synapse
from tests.helpers.faults.context import FaultContext
from tests.helpers.faults.ledger import Outcome
from tests.helpers.faults.scenarios import SCENARIOS, Size
from tests.helpers.harness import BridgeSetup

from .env import email_setup, run_main, step

UPLOAD_LIMIT = "2M"  # small, so the oversized-attachment scenario needs no huge mail


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=200,
                   help="SIGKILLs per kill scenario; mails and other faults scale with it")
    p.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), metavar="NAME",
                   help=f"run only these scenarios ({', '.join(SCENARIOS)})")
    p.add_argument("--db", choices=("sqlite", "postgres"),
                   help="only this database (default: each database a scenario applies to)")
    p.add_argument("--seed", type=int, default=1, help="seed of the fault schedules (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the temp root (configs and logs)")
    return p.parse_args(argv)


async def _run_one(name: str, database: str, size: Size, args: argparse.Namespace, root: Path,
                   mail: MailStack, synapse: Synapse, setup: BridgeSetup,
                   pg: PostgresServer) -> Outcome:
    workdir = root / f"{name}-{database}"
    workdir.mkdir()
    admin: str | None = None
    if database == "sqlite":
        db_url = f"sqlite:{workdir / 'bridge.db'}"
    else:
        db_url = await asyncio.to_thread(create_database, pg.dsn, f"letterbox_soak_{uuid.uuid4().hex[:12]}")
        admin = pg.dsn
    ctx = FaultContext(mail, synapse, setup, db_url, workdir,
                       random.Random(f"{args.seed}-{name}-{database}"), pg_admin_dsn=admin,
                       progress=print)
    scenario, _ = SCENARIOS[name]
    started = time.monotonic()
    try:
        outcome = await scenario(ctx, size)
    except Exception as exc:  # a broken set-up is reported, the next scenario still runs
        outcome = Outcome(f"{name} ({database})", problems=[f"the scenario broke: {exc!r}"])
    finally:
        await ctx.close()
        if admin is not None:
            await asyncio.to_thread(drop_database, admin, db_url.rsplit("/", 1)[1])
    outcome.facts["took"] = f"{time.monotonic() - started:.0f} s"
    return outcome


def _make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="letterbox-soak-", dir="/tmp"))
    root.chmod(0o755)  # the mail and postfix users must be able to enter it
    return root


async def _main(args: argparse.Namespace) -> bool:
    size = Size().scaled(args.kills)
    root = await asyncio.to_thread(_make_root)
    outcomes: list[Outcome] = []
    try:
        async with AsyncExitStack() as stack:
            mail = MailStack(root / "mail", {})
            stack.callback(mail.stop)
            await asyncio.to_thread(mail.start)
            setup = email_setup(root / "bridge")
            synapse = Synapse(root / "synapse", registrations=[setup.registration],
                              max_upload_size=UPLOAD_LIMIT)
            stack.callback(synapse.stop)
            await asyncio.to_thread(synapse.start)
            pg = await asyncio.to_thread(ensure_postgres, root / "pg")
            stack.callback(pg.stop)
            step(f"servers up (root {root}); {size.kills} kills and {size.mails} mails per kill "
                 f"scenario, seed {args.seed}")
            for name, (_, databases) in SCENARIOS.items():
                if args.only and name not in args.only:
                    continue
                for database in databases:
                    if args.db and database != args.db:
                        continue
                    step(f"{name} on {database}")
                    outcome = await _run_one(name, database, size, args, root, mail, synapse,
                                             setup, pg)
                    print(outcome.report(), flush=True)
                    outcomes.append(outcome)
    finally:
        if args.keep or os.environ.get("LETTERBOX_KEEP_STACK"):
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print("\nsummary (lost / duplicated / out of order per check):")
    for outcome in outcomes:
        print(f"  {'OK    ' if outcome.clean else 'FAILED'} {outcome.scenario}")
        for verdict in outcome.verdicts:
            print(f"           {verdict.line()}")
        for problem in outcome.problems:
            print(f"           problem: {problem}")
    return all(o.clean for o in outcomes)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    clean: list[bool] = []

    async def run() -> None:
        clean.append(await _main(args))

    status = run_main(run)
    return status or (0 if clean and clean[0] else 1)


if __name__ == "__main__":
    sys.exit(main())
