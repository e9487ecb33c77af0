"""The servers a benchmark runs against: Dovecot + Postfix, Synapse, a database, a bridge config.

Everything lives under one temp root on loopback and is stopped and removed on exit. The pieces
come from `devstack` and the test harness (`tests/helpers`); nothing here starts a server itself.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager, redirect_stdout
from dataclasses import dataclass
import imaplib
import io
import logging
import os
from pathlib import Path
import shutil
import signal
import sys
import tempfile
import time
from typing import Any
import uuid

from bridge.__main__ import load_config
from bridge.connectors import load_connector
from bridge.connectors.email.inbound.pool import close_default_pool
from bridge.core.bridge import Bridge
from devstack.matrix_client import MatrixTestClient
from devstack.postgres import create_database, drop_database, ensure_postgres
from devstack.stack import MailStack, Synapse
from tests.helpers.email_e2e import logged_in
from tests.helpers.harness import EMAIL_RIG_OVERRIDES, BridgeSetup, start_bridge

from .probe import StageProbe

# The Matrix user is an ordinary local user; the bot lets `localhost` users log in.
PERMISSIONS = {"*": "relay", "localhost": "user"}


def email_setup(root: Path) -> BridgeSetup:
    """The email bridge's config template and registration for the rig's servers (without the
    generator's "Wrote registration.yaml" line)."""
    with redirect_stdout(io.StringIO()):
        return BridgeSetup.generate(root, "email", permissions=PERMISSIONS,
                                    overrides=EMAIL_RIG_OVERRIDES)


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--postgres", action="store_true",
                        help="run the bridge on PostgreSQL (the local server or a private cluster)")
    parser.add_argument("--encrypted", action="store_true",
                        help="also run the bridge with encrypted portals (a second database) and "
                             "compare; the user then has an E2EE device (matrix-nio) the room "
                             "keys are shared with")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp root (server configs and logs) and print its path")


@dataclass(slots=True)
class BenchEnv:
    """Running servers, a bridge config for them, and one registered Matrix user."""

    root: Path
    mail: MailStack
    synapse: Synapse
    setup: BridgeSetup
    config: Path
    db_label: str
    user: MatrixTestClient
    log_file: Path
    config_encrypted: Path | None = None
    password: str = ""

    async def mailbox(self, local: str) -> tuple[str, str]:
        """A fresh mailbox on the running Dovecot/Postfix that accepts a login: (address, password)."""
        password = f"pw-{local}"
        address = await asyncio.to_thread(self.mail.add_user, local, password)
        # add_user returns once Postfix takes mail for the address; Dovecot sometimes rejects
        # the very first login after that (the next one, a moment later, succeeds).
        deadline = time.monotonic() + 15
        while True:
            try:
                client = await asyncio.to_thread(self.mail.imap_client, address)
            except imaplib.IMAP4.error:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            await asyncio.to_thread(client.logout)
            return address, password

    async def start_bridge(self, probe: StageProbe | None = None, *, encrypted: bool = False) -> Bridge:
        """Start an in-process bridge with the email connector (`probe` is attached first);
        `encrypted`: the config whose portals are encrypted (its own database)."""
        config = self.config_encrypted if encrypted else self.config
        assert config is not None, "run with --encrypted"
        if probe is None:
            return await start_bridge(config, connector_name="email")
        connector = load_connector("email")
        bridge = Bridge(load_config(config, connector), connector)
        probe.wrap(bridge)
        await bridge.start()
        return bridge

    async def stop_bridge(self, bridge: Bridge) -> None:
        """Stop the bridge and its parser workers, as the end of the bridge process would."""
        # Let the homeserver's last transactions be handled first: Bridge.stop() can hang when
        # an event wakes the inbox processor just as it is cancelled (asyncio.wait_for in
        # Python 3.11 then swallows the cancellation and the processor loop runs on).
        try:
            await bridge.processor.drain(timeout=15)
        except TimeoutError:
            step("warning: the bridge's event inbox did not drain within 15 s")
        try:
            async with asyncio.timeout(30):
                await bridge.stop()
        except TimeoutError:
            raise RuntimeError("Bridge.stop() did not finish within 30 s") from None
        # Bridge.stop() leaves the process-wide parser pool running; a real restart starts it anew.
        await close_default_pool()

    async def log_in(self, bridge: Bridge, mailbox: tuple[str, str]) -> str:
        """Log the Matrix user in to `mailbox` through the bot; returns the management room."""
        return await logged_in(bridge, self.user, self.mail, mailbox)


def _make_root() -> Path:
    # not under a 0700 dir: the mail and postfix users must be able to enter it
    root = Path(tempfile.mkdtemp(prefix="letterbox-bench-", dir="/tmp"))
    root.chmod(0o755)
    return root


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    return handler


def _unlog(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@asynccontextmanager
async def bench_env(args: argparse.Namespace,
                    network: dict[str, Any] | None = None) -> AsyncIterator[BenchEnv]:
    """Start Dovecot, Postfix and Synapse (and pick the database); stop and remove all on exit.
    `network`: `network.email` options of the bridge config besides the rig's own."""
    root = _make_root()
    log_file = root / "bench.log"
    try:
        async with AsyncExitStack() as stack:
            stack.callback(_unlog, _log_to(log_file))
            mail = MailStack(root / "mail", {})
            stack.callback(mail.stop)
            await asyncio.to_thread(mail.start)
            setup = email_setup(root / "bridge")
            synapse = Synapse(root / "synapse", registrations=[setup.registration])
            stack.callback(synapse.stop)
            await asyncio.to_thread(synapse.start)
            db_url, db_label = f"sqlite:{root / 'bridge.db'}", "SQLite"
            if args.postgres:
                server = await asyncio.to_thread(ensure_postgres, root / "pg")
                stack.callback(server.stop)
                name = f"letterbox_bench_{uuid.uuid4().hex[:12]}"
                db_url = await asyncio.to_thread(create_database, server.dsn, name)
                stack.callback(drop_database, server.dsn, name)
                db_label = f"PostgreSQL (port {server.port})"
            config = setup.config_for("bench", hs_url=synapse.hs_url, db_url=db_url,
                                      network={"ca_file": str(mail.ca_file), **(network or {})})
            config_encrypted: Path | None = None
            if getattr(args, "encrypted", False):
                encrypted_db = f"sqlite:{root / 'bridge-e2ee.db'}"
                if args.postgres:
                    name = f"letterbox_bench_{uuid.uuid4().hex[:12]}"
                    encrypted_db = await asyncio.to_thread(create_database, server.dsn, name)
                    stack.callback(drop_database, server.dsn, name)
                config_encrypted = setup.config_for(
                    "bench-e2ee", hs_url=synapse.hs_url, db_url=encrypted_db,
                    network={"ca_file": str(mail.ca_file)},
                    core={"encryption.default": True})
            name = f"bench{uuid.uuid4().hex[:6]}"
            user_id, token = await asyncio.to_thread(synapse.register_user, name, f"pass-{name}")
            user = MatrixTestClient(synapse.hs_url, user_id, token)
            stack.push_async_callback(user.close)
            await user.sync_once()
            step(f"servers up (root {root}, bridge database {db_label})")
            try:
                yield BenchEnv(root, mail, synapse, setup, config, db_label, user, log_file,
                               config_encrypted, f"pass-{name}")
            except BaseException:
                print(f"failed; the last lines of {log_file}:\n{_tail(log_file)}", file=sys.stderr)
                raise
    finally:
        if args.keep or os.environ.get("LETTERBOX_KEEP_STACK"):
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run_main(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run a benchmark; SIGTERM and SIGINT cancel it, so every server it started is stopped."""
    received: list[str] = []

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def interrupt(sig: signal.Signals) -> None:
            received.append(sig.name)
            task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, interrupt, sig)
        await main()

    try:
        asyncio.run(guarded())
    except asyncio.CancelledError:
        if not received:
            raise  # cancelled from inside, not by a signal: a bug worth its traceback
        print(f"interrupted ({', '.join(received)}); servers stopped", file=sys.stderr)
        return 130
    return 0


_T0 = time.monotonic()


def step(text: str) -> None:
    """A progress line (seconds since start), so a stuck run shows where it stopped."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {text}", flush=True)
