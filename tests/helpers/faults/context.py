"""What a scenario runs against: the servers, a fresh bridge database, and helpers to make users,
mailboxes, bridge configs and bridge processes (all stopped by `close`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
import random
import time
from typing import Any
import uuid

from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack, Synapse
from tests.helpers.bridge_process import BridgeProcess
from tests.helpers.harness import BridgeSetup


@dataclass(slots=True)
class FaultContext:
    """One scenario's world. `db_url` is an empty database for this scenario's bridge;
    `pg_admin_dsn` (PostgreSQL only) reaches the same server as a superuser."""

    mail: MailStack
    synapse: Synapse
    setup: BridgeSetup
    db_url: str
    workdir: Path
    rng: random.Random
    pg_admin_dsn: str | None = None
    progress: Callable[[str], None] = lambda _: None
    _clients: list[MatrixTestClient] = field(default_factory=list)
    _bridges: list[BridgeProcess] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic)

    @property
    def database(self) -> str:
        return "PostgreSQL" if self.db_url.startswith("postgres") else "SQLite"

    def say(self, text: str) -> None:
        self.progress(f"[{time.monotonic() - self._started:6.1f} s] {text}")

    async def new_user(self) -> MatrixTestClient:
        name = f"fault{uuid.uuid4().hex[:8]}"
        user_id, token = await asyncio.to_thread(self.synapse.register_user, name, f"pass-{name}")
        client = MatrixTestClient(self.synapse.hs_url, user_id, token)
        self._clients.append(client)
        await client.sync_once()
        return client

    async def new_mailbox(self, prefix: str = "u") -> tuple[str, str]:
        local = f"{prefix}{uuid.uuid4().hex[:10]}"
        password = f"pw-{local}"
        address = await asyncio.to_thread(self.mail.add_user, local, password)
        return address, password

    def bridge(self, core: dict[str, Any] | None = None, **network: Any) -> BridgeProcess:
        """A (not yet started) bridge process on this scenario's database; `network` overrides
        `network.email` options (keys as in the config, e.g. `backfill.max_messages`), `core`
        the bridge's own (e.g. `appservice.port`)."""
        options = {"ca_file": str(self.mail.ca_file), "imap.poll_interval": 1,
                   "outbound.retry_schedule": [1, 2, 30],
                   "outbound.max_mails_per_hour": 1_000_000, **network}
        name = f"{self.workdir.name}-{len(self._bridges)}"
        config = self.setup.config_for(name, hs_url=self.synapse.hs_url, db_url=self.db_url,
                                       network=options, core=core)
        process = BridgeProcess(config, self.workdir / f"{name}.log")
        self._bridges.append(process)
        return process

    async def close(self) -> None:
        for process in self._bridges:
            await asyncio.to_thread(process.kill)
        for client in self._clients:
            await client.close()
