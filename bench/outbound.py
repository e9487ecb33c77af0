"""Outbound mail (Matrix -> email): the bridge's own latency, and 100 mails back to back.

Run: `.venv/bin/python -m bench.outbound [--quick] [--json-out PATH] [-n 30] [-m 100] [--postgres]`.

1. **Own share**: the user sends N messages one at a time into a direct chat. Per message, from
   time stamps inside the in-process bridge: the appservice push of the Matrix event arriving
   (the transaction's events are being read) -> Postfix's 250 to the mail's DATA reaching the
   outbox. Everything the bridge does in between counts (storing the transaction, composing the
   mail, the outbox row, the SMTP transaction on the login's kept session).
2. **100 back to back**: the login's outbox is stopped while the user sends M messages (Synapse
   pushes them; the bridge queues M mails), then started: M / (start -> the M-th 250). The
   baseline, in the same run against the same Postfix, just before (the bridge idle): a plain
   `smtplib` client that opens one session (STARTTLS, login) and submits the same M mails (the
   outbox rows' bytes) one after the other. Both include opening their session. The status
   events, receipts and Sent copies of the bridge's mails follow the burst (the outbox runs them
   when no mail is ready to go); the time until they are all done is reported too.

Prints figures and writes them with `--json-out` as one flat JSON object (`outbound_own_p50_ms`,
`outbound_own_p90_ms`, `send_100_ratio`, and the raw figures behind them). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
import smtplib
import statistics
import sys
import time
from typing import Any

from bridge.connectors.email.client import EmailClient
from bridge.connectors.email.outbox import Outbox
from bridge.core.bridge import Bridge
from devstack.bot_flows import wait_notice
from devstack.stack import MailStack

from .env import BenchEnv, bench_env, common_arguments, run_main, step
from .output import Figure, output_arguments, write_figures
from .stats import Summary, header

TARGET_P50_MS, TARGET_P90_MS, TARGET_RATIO = 10.0, 15.0, 0.8
_PARAGRAPH = ("Thanks for the notes from Tuesday. I went through the list again and the open points "
              "are the venue, the budget for the catering and who collects the keys on Friday. ")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.outbound", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=None, help="messages for the latency (default 30, "
                   "--quick 10)")
    p.add_argument("-m", type=int, default=100, help="mails back to back (default 100)")
    p.add_argument("--gap", type=float, default=0.3,
                   help="pause after a mail's 250 before the next message (s, default 0.3)")
    output_arguments(p)
    common_arguments(p)
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 10 if args.quick else 30
    return args


class OutboundProbe:
    """Time stamps per Matrix event ID: `pushed` when the homeserver's transaction with it is
    read, `handling`/`queued` when the connector starts on it and has stored its mail in the
    outbox, `sending` when the outbox starts its SMTP transaction, `accepted` when the outbox has
    the server's 250."""

    STAGES = ("pushed", "handling", "queued", "sending", "accepted")

    def __init__(self) -> None:
        self.stamps: dict[str, dict[str, float]] = {stage: {} for stage in self.STAGES}
        self._changed = asyncio.Event()
        self._restore: list[Callable[[], None]] = []

    @property
    def accepted(self) -> dict[str, float]:
        return self.stamps["accepted"]

    def _note(self, stage: str, event_id: str) -> None:
        self.stamps[stage].setdefault(event_id, time.monotonic())
        if stage == "accepted":
            self._changed.set()

    def _wrap(self, cls: Any, name: str, before: str | None, after: str | None) -> None:
        """Wrap the method `name` of `cls` (its first argument carries the event ID)."""
        inner = getattr(cls, name)

        async def timed(this: Any, first: Any, *args: Any) -> Any:
            if before:
                self._note(before, first.event_id)
            result = await inner(this, first, *args)
            if after:
                self._note(after, first.event_id)
            return result

        setattr(cls, name, timed)
        self._restore.append(lambda: setattr(cls, name, inner))

    def attach(self, bridge: Bridge) -> None:
        """Before Bridge.start(); the connector's classes are wrapped until `detach`."""
        scrub = bridge.intake._scrub

        def noted(event: dict[str, Any]) -> dict[str, Any]:
            if isinstance(event.get("event_id"), str):
                self._note("pushed", event["event_id"])
            return scrub(event)

        bridge.intake._scrub = noted
        self._wrap(EmailClient, "handle_matrix_message", "handling", "queued")
        self._wrap(Outbox, "_send", "sending", None)
        self._wrap(Outbox, "_sent", "accepted", None)

    def detach(self) -> None:
        for restore in reversed(self._restore):
            restore()
        self._restore.clear()

    def split(self, event_ids: list[str]) -> dict[str, list[float]]:
        """Per stage, the time from the stage before it, for every event that has all stamps."""
        out: dict[str, list[float]] = {stage: [] for stage in self.STAGES[1:]}
        for e in event_ids:
            if all(e in self.stamps[stage] for stage in self.STAGES):
                for prev, stage in zip(self.STAGES, self.STAGES[1:], strict=False):
                    out[stage].append(self.stamps[stage][e] - self.stamps[prev][e])
        return out

    async def wait_accepted(self, event_ids: list[str], timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not all(e in self.accepted for e in event_ids):
                self._changed.clear()
                await self._changed.wait()


def _body(kind: str, i: int) -> str:
    return f"Subject: Outbound bench\nbench-{kind}-{i}\n\n{_PARAGRAPH * 3}"


async def _start_chat(env: BenchEnv, bridge: Bridge, management: str, address: str) -> str:
    await env.user.send_text(management, f"start-chat {address}")
    await wait_notice(env.user, management, bridge.bot_mxid, f"Created a chat with {address}",
                      timeout=30)
    room = await env.user.wait_for_room_invite(timeout=30)
    await env.user.join(room)
    return room


async def _send_many(env: BenchEnv, room: str, count: int, at_once: int = 10) -> list[str]:
    """`count` messages, `at_once` requests in flight (Synapse takes one room's events one at a
    time; in flight, they queue there instead of paying a round trip each)."""
    gate = asyncio.Semaphore(at_once)

    async def one(i: int) -> str:
        async with gate:
            return await env.user.send_text(room, f"bench-burst-{i}\n\n{_PARAGRAPH}")
    return list(await asyncio.gather(*(one(i) for i in range(count))))


def _client(bridge: Bridge, user_id: str) -> EmailClient:
    [login] = bridge.logins_of(user_id)
    assert isinstance(login.client, EmailClient)
    return login.client


async def _wait_queued(bridge: Bridge, login_id: str, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while await bridge.connector_db.fetchval(
            "SELECT COUNT(*) FROM email_outbox WHERE login_id=$1 AND state='queued'", login_id) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} mails were not queued within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def _wait_settled(bridge: Bridge, login_id: str, timeout: float = 120.0) -> None:
    """Until every Sent copy of the login is made (its follow-up work is over)."""
    deadline = time.monotonic() + timeout
    while await bridge.connector_db.fetchval(
            "SELECT COUNT(*) FROM email_outbox WHERE login_id=$1 AND copy_pending", login_id):
        if time.monotonic() > deadline:
            raise TimeoutError("the Sent copies were not all made")
        await asyncio.sleep(0.1)


def _smtplib_run(mail: MailStack, address: str, password: str, peer: str,
                 raws: list[bytes]) -> float:
    """Seconds for one smtplib session (connect, STARTTLS, login) to submit every mail."""
    started = time.monotonic()
    with smtplib.SMTP(mail.host, mail.submission_port, timeout=30) as smtp:
        smtp.starttls(context=mail.ssl_context())
        smtp.login(address, password)
        for raw in raws:
            smtp.sendmail(address, [peer], raw)
        elapsed = time.monotonic() - started
    return elapsed


async def run(args: argparse.Namespace) -> dict[str, Figure]:
    started = time.monotonic()
    probe = OutboundProbe()
    # the bench sends more than the default hourly limit of a login
    async with bench_env(args, network={"outbound.max_mails_per_hour": 100_000}) as env:
        address, password = await env.mailbox("sender")
        peer, _ = await env.mailbox("peer")
        bridge = await env.start_bridge()
        try:
            probe.attach(bridge)
            management = await env.log_in(bridge, (address, password))
            room = await _start_chat(env, bridge, management, peer)
            client = _client(bridge, env.user.user_id)
            warm = await env.user.send_text(room, _body("warmup", 0))
            await probe.wait_accepted([warm])

            step(f"own share: {args.n} messages, one at a time")
            latency_ids = []
            for i in range(args.n):
                event_id = await env.user.send_text(room, _body("lat", i))
                await probe.wait_accepted([event_id])
                latency_ids.append(event_id)
                await asyncio.sleep(args.gap)
            own = [probe.accepted[e] - probe.stamps["pushed"][e] for e in latency_ids]
            split = probe.split(latency_ids)
            await _wait_settled(bridge, client.login.login_id)

            step(f"{args.m} mails back to back: queueing them with the outbox stopped")
            await client.outbox.stop()
            burst_ids = await _send_many(env, room, args.m)
            await _wait_queued(bridge, client.login.login_id, args.m)
            stored = {r["event_id"]: bytes(r["raw"]) for r in await bridge.connector_db.fetch(
                "SELECT event_id, raw FROM email_outbox WHERE login_id=$1", client.login.login_id)}
            raws = [stored[e] for e in burst_ids]
            # the baseline first, while the bridge has nothing to do: the same mails' bytes
            step(f"baseline: smtplib, {len(raws)} mails over one session")
            base_s = await asyncio.to_thread(_smtplib_run, env.mail, address, password, peer, raws)
            step(f"bridge: its outbox started with {args.m} mails queued")
            opened_before = client.outbox.smtp.sessions_opened
            drain_started = time.monotonic()
            client.outbox.start()
            await probe.wait_accepted(burst_ids, timeout=300)
            drain_s = max(probe.accepted[e] for e in burst_ids) - drain_started
            sessions = client.outbox.smtp.sessions_opened - opened_before
            await _wait_settled(bridge, client.login.login_id)
            settled_s = time.monotonic() - drain_started - drain_s
        finally:
            probe.detach()
            await env.stop_bridge(bridge)
        db_label = env.db_label

    o = Summary.of(own)
    bridge_rate, base_rate = args.m / drain_s, len(raws) / base_s
    figures: dict[str, Figure] = {
        "outbound_own_p50_ms": round(o.median * 1000, 2),
        "outbound_own_p90_ms": round(o.p90 * 1000, 2),
        "outbound_own_max_ms": round(o.max * 1000, 2),
        "outbound_n": args.n,
        "send_100_ratio": round(bridge_rate / base_rate, 3),
        "send_100_mails": args.m,
        "send_100_bridge_per_s": round(bridge_rate, 1),
        "send_100_smtplib_per_s": round(base_rate, 1),
        "send_100_bridge_smtp_sessions": sessions,
        "send_100_follow_ups_s": round(settled_s, 2),
        "outbound_own_p50_ms_note": f"bridge on {db_label}, {args.n} messages one at a time",
    }
    print()
    print(f"Outbound, bridge on {db_label}")
    print(header())
    print(o.row("own share: appservice push -> Postfix 250"))
    print(f"  target: median <= {TARGET_P50_MS:.0f} ms, p90 <= {TARGET_P90_MS:.0f} ms")
    labels = {"handling": "transaction stored -> connector has the event",
              "queued": "compose the mail, store it in the outbox",
              "sending": "outbox wakes, picks the row",
              "accepted": "row 'sending', SMTP transaction -> 250"}
    print("  where the time goes (medians):")
    for stage, label in labels.items():
        if split[stage]:
            print(f"    {label:<48} {statistics.median(split[stage]) * 1000:6.1f} ms")
    print(f"  {args.m} mails back to back: bridge {bridge_rate:.1f} mails/s "
          f"({sessions} SMTP session(s)), smtplib on one session {base_rate:.1f} mails/s, "
          f"ratio {bridge_rate / base_rate:.2f} (target >= {TARGET_RATIO})")
    print(f"  their status events, receipts and Sent copies were all done {settled_s:.1f} s "
          "after the last 250")
    print(f"  total run time {time.monotonic() - started:.0f} s")
    return figures


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)

    async def go() -> None:
        write_figures(args.json_out, await run(args))
    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
