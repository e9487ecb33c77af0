"""Several worker processes sharing the logins (PostgreSQL), one of them SIGKILLed: the other
takes its logins over. Shared by the test suite (a few logins) and `python -m bench.failover`.

Every login gets mail from one correspondent (a mailbox of the rig, so replies are mailed to it);
each mail carries a token, and what reached each portal room or the correspondent's INBOX is
counted per token as in the fault suite.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
import re
import time
from typing import Any

import asyncpg

from devstack.matrix_client import MatrixTestClient
from devstack.ports import free_port
from tests.helpers.bridge_process import BridgeProcess
from tests.helpers.email_e2e import mail

from .actors import deliver_paced
from .context import FaultContext
from .ledger import Tokens, Verdict
from .observe import folder_copies, room_history, text_tokens, wait_for_mail_token, wait_for_text
from .scenarios import log_in


@dataclass(slots=True)
class Mailbox:
    """One login: its Matrix user, its address and the portal room of the correspondent."""

    user: MatrixTestClient
    address: str
    room: str = ""


@dataclass(slots=True)
class Fleet:
    ctx: FaultContext
    workers: list[BridgeProcess]
    ids: list[str]
    lease_s: float
    peer: str
    tokens: Tokens
    mailboxes: list[Mailbox] = field(default_factory=list)
    _next: int = 0

    def token(self) -> str:
        self._next += 1
        return self.tokens.text(self._next)

    async def deliver(self, box: Mailbox, token: str) -> None:
        msg = mail(f"Peer <{self.peer}>", [box.address], "Note", f"Mail {token}\n")
        await deliver_paced(self.ctx.mail, [msg], box.address, self.peer, 0.0)

    async def holders(self) -> dict[str, str]:
        """Matrix user -> the worker holding its lease (expired leases included)."""
        conn = await asyncpg.connect(self.ctx.db_url)
        try:
            rows = await conn.fetch("SELECT subject, worker FROM worker_lease "
                                    "WHERE subject LIKE '@%'")
        finally:
            await conn.close()
        return {r["subject"]: r["worker"] for r in rows}

    async def wait_for_holders(self, done: Any, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            holders = await self.holders()
            if done(holders):
                return holders
            if time.monotonic() > deadline:
                raise TimeoutError(f"leases did not settle within {timeout:.0f} s: {holders}")
            await asyncio.sleep(0.1)


def worker_core(ctx: FaultContext, worker_id: str, lease_s: float, port: int | None) -> dict[str, Any]:
    core: dict[str, Any] = {"workers.enabled": True, "workers.id": worker_id,
                            "workers.lease_seconds": lease_s, "encryption.allow": False,
                            "provisioning.enabled": False, "metrics.enabled": False}
    if port is not None:  # not the process the registration points at
        core["appservice.port"] = port
    return core


async def start_fleet(ctx: FaultContext, workers: int, lease_s: float) -> Fleet:
    """`workers` worker processes on the context's (PostgreSQL) database; the first receives
    the homeserver's transactions."""
    ids = [f"worker-{n}" for n in range(workers)]
    processes = [ctx.bridge(core=worker_core(ctx, wid, lease_s, None if n == 0 else free_port()))
                 for n, wid in enumerate(ids)]
    for process in processes:
        await asyncio.to_thread(process.start)
    peer, _ = await ctx.new_mailbox("peer")
    return Fleet(ctx, processes, ids, lease_s, peer, Tokens.fresh())


async def add_mailboxes(fleet: Fleet, count: int, concurrency: int = 4,
                        mailboxes: list[tuple[str, str]] | None = None) -> None:
    """`count` users, each logged in to a mailbox of their own (`mailboxes`, address and
    password, or new ones), with the correspondent's room made by a first mail and joined."""
    ctx, gate = fleet.ctx, asyncio.Semaphore(concurrency)
    if mailboxes is None:  # one at a time: adding a mailbox rewrites the servers' configs
        mailboxes = [await ctx.new_mailbox() for _ in range(count)]

    async def one(mailbox: tuple[str, str]) -> Mailbox:
        async with gate:
            user = await ctx.new_user()
            await log_in(ctx, fleet.workers[0], user, mailbox)
            box = Mailbox(user, mailbox[0])
            token = fleet.token()
            await fleet.deliver(box, token)
            box.room = await user.wait_for_room_invite(timeout=60)
            await user.join(box.room)
            await wait_for_text(user, box.room, token, 60)
            return box

    fleet.mailboxes += await asyncio.gather(*(one(m) for m in mailboxes[:count]))


@dataclass(slots=True)
class Failover:
    """What a worker's death did: how long until its mailboxes were served again, and what
    reached Matrix and the correspondent."""

    killed: str
    moved: int  # users the killed worker held
    leases_s: float  # kill -> every one of its users leased by a live worker
    connected_s: float  # kill -> every one of its mailboxes connected by a live worker
    served_s: float  # kill -> a mail sent at the kill reached every one of its mailboxes' rooms
    verdicts: list[Verdict]

    @property
    def lost(self) -> int:
        return sum(len(v.lost) for v in self.verdicts)

    @property
    def duplicated(self) -> int:
        return sum(sum(v.duplicated.values()) for v in self.verdicts)


async def kill_one(fleet: Fleet, victim: int = -1, timeout: float = 120) -> Failover:
    """SIGKILL one worker (not the one receiving transactions); mail every mailbox at once and
    a Matrix message from a user of the dead worker; wait until all arrived, then count."""
    process, killed = fleet.workers[victim], fleet.ids[victim]
    holders = await fleet.holders()
    theirs = {u for u, w in holders.items() if w == killed}
    assert theirs, f"{killed} holds no user: {holders}"
    await asyncio.to_thread(process.kill)
    killed_at, killed_wall = time.monotonic(), time.time()
    sent: dict[str, str] = {}  # room -> token

    async def mail_one(box: Mailbox) -> None:
        sent[box.room] = fleet.token()
        await fleet.deliver(box, sent[box.room])

    await asyncio.gather(*(mail_one(box) for box in fleet.mailboxes))
    orphan = next(box for box in fleet.mailboxes if box.user.user_id in theirs)
    reply = fleet.token()
    await orphan.user.send_text(orphan.room, f"Reply {reply}")
    leased = await fleet.wait_for_holders(
        lambda h: all(h.get(u) not in (killed, None) for u in theirs), timeout)
    leases_s = time.monotonic() - killed_at
    del leased
    arrived: dict[str, float] = {}

    async def wait_one(box: Mailbox) -> None:
        await wait_for_text(box.user, box.room, sent[box.room], timeout)
        arrived[box.user.user_id] = time.monotonic() - killed_at

    await asyncio.gather(*(wait_one(box) for box in fleet.mailboxes))
    served_s = max(arrived[u] for u in theirs)
    addresses = {box.address for box in fleet.mailboxes if box.user.user_id in theirs}
    survivors = [p.log_file for p in fleet.workers if p is not process]
    sessions = await asyncio.to_thread(_sessions_since, survivors, killed_wall)
    missing = addresses - set(sessions)
    assert not missing, f"no IMAP session logged for {sorted(missing)[:5]}"
    connected_s = max(sessions[a] for a in addresses) - killed_wall
    await wait_for_mail_token(fleet.ctx.mail, fleet.peer, "INBOX", fleet.tokens, reply, "ft", timeout)
    verdicts = await count(fleet, {room: [t] for room, t in sent.items()}, reply)
    return Failover(killed, len(theirs), leases_s, connected_s, served_s, verdicts)


_SESSION = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*IMAP session for (\S+) established")


def _sessions_since(logs: list[Path], since: float) -> dict[str, float]:
    """Address -> when a worker's log first says its IMAP session was established after `since`
    (the bridge's log time stamps are local wall-clock time)."""
    first: dict[str, float] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            match = _SESSION.match(line)
            if match is None:
                continue
            at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if at >= since:
                first[match[2]] = min(at, first.get(match[2], at))
    return first


async def mail_all(fleet: Fleet) -> dict[str, str]:
    """A mail to every mailbox at once; returns room -> its token."""
    sent = {box.room: fleet.token() for box in fleet.mailboxes}
    await asyncio.gather(*(fleet.deliver(box, sent[box.room]) for box in fleet.mailboxes))
    return sent


async def count(fleet: Fleet, sent: dict[str, list[str]], reply: str | None = None
                ) -> list[Verdict]:
    """After a last mail to every mailbox has arrived (anything posted twice is there by then):
    each token sent to a room once in it, in order; the reply once in the correspondent's INBOX."""
    barrier = await mail_all(fleet)
    expected: list[str] = []
    observed: list[str] = []
    for box in fleet.mailboxes:
        await wait_for_text(box.user, box.room, barrier[box.room], 60)
        mine = sent.get(box.room, [])
        expected += mine
        observed += [t for t in text_tokens(await room_history(box.user, box.room), fleet.tokens)
                     if t in mine]
    verdicts = [Verdict.judge("mails in Matrix", expected, observed)]
    if reply is not None:
        copies = await asyncio.to_thread(folder_copies, fleet.ctx.mail, fleet.peer, "INBOX",
                                         fleet.tokens)
        verdicts.append(Verdict.judge("Matrix message mailed", [reply],
                                      [t for c in copies for t in c.tokens if t == reply]))
    return verdicts
