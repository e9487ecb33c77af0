"""The fault suite: each scenario of tests/helpers/faults/scenarios.py against the real servers,
with the bridge as its own process, sized to take seconds. A scenario passes when every token
arrived exactly once (and in order where the bridge decides the order) and its own checks held.

The kill schedule is seeded (LETTERBOX_FAULT_SEED, default 1) per scenario and database, so a
failure can be replayed; the soak (`python -m bench.soak`) runs the same scenarios far longer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
import os
from pathlib import Path
import random
import uuid

import pytest

from devstack.postgres import PostgresServer, create_database, drop_database
from devstack.stack import MailStack, Synapse
from tests.helpers.faults.context import FaultContext
from tests.helpers.faults.scenarios import SCENARIOS, Size
from tests.helpers.harness import BridgeSetup

pytestmark = [pytest.mark.servers, pytest.mark.long]

SEED = int(os.environ.get("LETTERBOX_FAULT_SEED", "1"))
SUITE_SIZE = Size()
# The scenarios in the suite; the soak (`python -m bench.soak`) runs every one of SCENARIOS.
IN_SUITE = [
    "inbound-kills",
    "attachment-kills",
    "outbound-kills",
    "postgres-terminate",
    "oversized-attachment",
    "uidvalidity",
    "synapse-down",
    "dovecot-restart",
    "poison-mail",
]
CASES = [(name, db) for name in IN_SUITE for db in SCENARIOS[name][1]]


@pytest.fixture
async def fault_context(request: pytest.FixtureRequest, case: tuple[str, str],
                        mail_stack: MailStack, synapse: Synapse,
                        bridge_setups: dict[str, BridgeSetup], tmp_path: Path
                        ) -> AsyncIterator[FaultContext]:
    """The scenario's world on a fresh database of the case's backend."""
    name, database = case
    rng = random.Random(f"{SEED}-{name}-{database}")
    admin: str | None = None
    if database == "sqlite":
        db_url = f"sqlite:{tmp_path / 'bridge.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        db_name = f"letterbox_f_{uuid.uuid4().hex[:12]}"
        db_url, admin = create_database(server.dsn, db_name), server.dsn
    ctx = FaultContext(mail_stack, synapse, bridge_setups["email"], db_url, tmp_path, rng,
                       pg_admin_dsn=admin, progress=print)
    try:
        yield ctx
    finally:
        await ctx.close()
        if admin is not None:
            drop_database(admin, db_url.rsplit("/", 1)[1])


@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{d}" for n, d in CASES])
async def test_each_message_arrives_once_in_order(case: tuple[str, str],
                                                   fault_context: FaultContext) -> None:
    scenario, _ = SCENARIOS[case[0]]
    outcome = await scenario(fault_context, SUITE_SIZE)
    print(outcome.report())  # the figures of a passing run too (pytest -rP)
    assert outcome.clean, outcome.report()
