"""What acts on the system during a scenario: mail at a steady rate, the bridge killed on a
seeded schedule, database connections terminated. Every loop is bounded in count."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
import random
import smtplib
import time

import asyncpg

from devstack.stack import MailStack
from tests.helpers.bridge_process import BridgeProcess


def _send_paced(mail_stack: MailStack, msgs: list[EmailMessage], to: str, sender: str,
                interval_s: float) -> None:
    with smtplib.SMTP(mail_stack.host, mail_stack.smtp_port, timeout=30) as smtp:
        next_at = time.monotonic()
        for msg in msgs:
            time.sleep(max(0.0, next_at - time.monotonic()))
            smtp.sendmail(sender, [to], msg.as_bytes())
            next_at += interval_s


async def deliver_paced(mail_stack: MailStack, msgs: list[EmailMessage], to: str, sender: str,
                        interval_s: float) -> None:
    """Send `msgs` through Postfix one every `interval_s` (one SMTP session, in a thread)."""
    await asyncio.to_thread(_send_paced, mail_stack, msgs, to, sender, interval_s)


@dataclass(slots=True)
class KillLog:
    """What a kill loop did."""

    kills: int = 0
    restart_s: list[float] = field(default_factory=list)
    at: list[float] = field(default_factory=list)  # time.monotonic() once each kill is done
    # run after each kill, while the bridge is down (e.g. to read what its database holds)
    after_kill: Callable[[], Awaitable[None]] | None = None

    def summary(self) -> str:
        if not self.restart_s:
            return f"{self.kills} SIGKILLs"
        slowest = max(self.restart_s)
        return f"{self.kills} SIGKILLs (restart to listening: max {slowest:.1f} s)"


async def restart(bridge: BridgeProcess, log: KillLog) -> None:
    started = time.monotonic()
    await asyncio.to_thread(bridge.start)
    log.restart_s.append(time.monotonic() - started)


async def kill_now(bridge: BridgeProcess, log: KillLog | None = None) -> None:
    """SIGKILL the bridge; `log` (if given) counts the kill and notes its time."""
    await asyncio.to_thread(bridge.kill)
    if log is not None:
        log.at.append(time.monotonic())  # once the process is dead: what it heard before, counts
        log.kills += 1
        if log.after_kill is not None:
            await log.after_kill()


async def kill_loop(bridge: BridgeProcess, rng: random.Random, kills: int, log: KillLog, *,
                    gap_s: tuple[float, float] = (0.3, 2.0),
                    before_kill: Callable[[int], Awaitable[bool]] | None = None) -> None:
    """`kills` times: let the bridge run for a seeded random while, SIGKILL it, start it again.

    `before_kill(n)` may kill the bridge itself at a moment of its choosing, through
    `kill_now(bridge, log)` (then it returns True and the loop only restarts it)."""
    for n in range(kills):
        await asyncio.sleep(rng.uniform(*gap_s))
        killed = await before_kill(n) if before_kill is not None else False
        if not killed:
            await kill_now(bridge, log)
        await restart(bridge, log)


async def terminate_loop(admin_dsn: str, database: str, rng: random.Random, times: int,
                         gap_s: tuple[float, float] = (0.2, 0.8)) -> int:
    """`times` times, after a seeded random pause: terminate every connection to `database`
    (pg_terminate_backend). Returns how many connections were terminated in all."""
    terminated = 0
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        for _ in range(times):
            await asyncio.sleep(rng.uniform(*gap_s))
            terminated += int(await conn.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()) AS t", database))
    finally:
        await conn.close()
    return terminated
