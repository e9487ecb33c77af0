"""Several bridge worker processes sharing the logins through PostgreSQL, against the real
servers. PostgreSQL only: SQLite is single-process (`workers.enabled` is refused there), the
one exception to running every database test on both.

The workers run as real processes (the fault suite's harness); the first receives the
homeserver's transactions, the others read the shared inbox. Leases are short (LEASE_S) so a
takeover takes seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import os
from pathlib import Path
import random
import signal
import uuid

import pytest

from devstack.postgres import PostgresServer, create_database, drop_database
from devstack.stack import MailStack, Synapse
from tests.helpers.faults.context import FaultContext
from tests.helpers.faults.failover import (
    add_mailboxes,
    count,
    kill_one,
    mail_all,
    start_fleet,
)
from tests.helpers.faults.observe import wait_for_text
from tests.helpers.harness import BridgeSetup

pytestmark = [pytest.mark.servers, pytest.mark.long]

LEASE_S = 5.0
LOGINS = 4


@pytest.fixture
async def pg_context(postgres_server: PostgresServer, mail_stack: MailStack, synapse: Synapse,
                     bridge_setups: dict[str, BridgeSetup], tmp_path: Path
                     ) -> AsyncIterator[FaultContext]:
    db_url = create_database(postgres_server.dsn, f"letterbox_w_{uuid.uuid4().hex[:12]}")
    ctx = FaultContext(mail_stack, synapse, bridge_setups["email"], db_url, tmp_path,
                       random.Random(1), pg_admin_dsn=postgres_server.dsn, progress=print)
    try:
        yield ctx
    finally:
        await ctx.close()
        drop_database(postgres_server.dsn, db_url.rsplit("/", 1)[1])


async def test_two_workers_share_the_logins(pg_context: FaultContext) -> None:
    fleet = await start_fleet(pg_context, workers=2, lease_s=LEASE_S)
    await add_mailboxes(fleet, LOGINS)
    # Every login was served (its first mail reached its room); each worker holds half.
    await fleet.wait_for_holders(lambda h: len(h) == LOGINS and list(h.values()).count(
        "worker-0") == LOGINS // 2, 30)


async def test_a_killed_workers_logins_are_served_by_the_other_exactly_once(
        pg_context: FaultContext) -> None:
    fleet = await start_fleet(pg_context, workers=2, lease_s=LEASE_S)
    await add_mailboxes(fleet, LOGINS)
    await fleet.wait_for_holders(lambda h: set(h.values()) == set(fleet.ids), 30)
    result = await kill_one(fleet)
    print(f"{result.moved} users of {result.killed}: leased again after {result.leases_s:.1f} s, "
          f"connected after {result.connected_s:.1f} s, mail in Matrix after "
          f"{result.served_s:.1f} s")
    # The leases move within one lease period (a lease lives half of it); how soon the mailboxes
    # are connected and mail flows again depends on the machine: bench.failover measures it.
    assert result.leases_s < LEASE_S
    assert (result.lost, result.duplicated) == (0, 0), [v.details() for v in result.verdicts]


async def test_a_frozen_worker_stops_acting_and_its_logins_come_back_exactly_once(
        pg_context: FaultContext) -> None:
    """A worker stopped (SIGSTOP) for longer than its leases: the other takes its logins over;
    woken, it finds it could not renew in time, stops acting for them, and gets its share back
    from the other (rebalancing). The mail of both moves arrives once, in order."""
    fleet = await start_fleet(pg_context, workers=2, lease_s=LEASE_S)
    await add_mailboxes(fleet, LOGINS)
    await fleet.wait_for_holders(lambda h: set(h.values()) == set(fleet.ids), 30)
    frozen = fleet.workers[1].process
    assert frozen is not None
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        during = await mail_all(fleet)
        await fleet.wait_for_holders(lambda h: set(h.values()) == {"worker-0"}, 30)
        await asyncio.gather(*(wait_for_text(box.user, box.room, during[box.room], 60)
                               for box in fleet.mailboxes))
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    await fleet.wait_for_holders(lambda h: list(h.values()).count("worker-1") == LOGINS // 2, 30)
    assert "could not renew" in fleet.workers[1].log_file.read_text()
    after = await mail_all(fleet)
    sent = {room: [during[room], after[room]] for room in during}
    verdicts = await count(fleet, sent)
    assert all(v.clean for v in verdicts), [v.details() for v in verdicts]
