"""A burst over many rooms: M mails from K senders (K rooms) arrive while the bridge is down.

Run: `.venv/bin/python -m bench.burst_rooms [--quick] [--json-out PATH] [--postgres]`.
Default 300 mails from 30 senders (`--quick`: 100 from 10), interleaved (sender 0, 1, ..., K-1,
0, 1, ...). A first mail from each sender creates its room, which the Matrix user joins. Then,
measured in the same run on the same servers:

- baseline: Synapse takes M appservice sends (the rooms' ghosts, round-robin over the rooms)
  from 10 concurrent senders, each PUT waiting for its answer: M / (first PUT -> last answer);
- the bridge: it is stopped, the burst is delivered, and it is started again as its own process
  (`python -m bridge`): M - 1 / (first mail seen by the client -> last mail seen).

`burst_rooms_ratio` is the bridge's rate over the baseline's. Each room's mails must reach the
client in mailbox (UID) order; the run says whether they did. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time

from bridge.connectors.email.config import EmailConfig
from devstack.matrix_client import is_space
from tests.helpers.bridge_process import BridgeProcess

from .env import BenchEnv, bench_env, common_arguments, run_main, step
from .imap_baseline import fetch_rates, wait_inbox_count
from .inbound_throughput import AppserviceRate, appservice_baseline
from .mails import bench_mail, deliver_burst, marker
from .mails import marker_of as mail_marker
from .observe import RoomWatcher
from .output import Figure, output_arguments, write_figures

BASELINE_CONCURRENCY = 10
_BODY_MARKER = re.compile(rb"bench-burst-\d+")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.burst_rooms", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    output_arguments(p)
    common_arguments(p)
    return p.parse_args(argv)


def _sender(k: int) -> str:
    """The From header of sender k."""
    return f"Robin {k} <robin{k}@example.org>"


async def _make_rooms(env: BenchEnv, address: str, senders: int) -> list[tuple[str, str]]:
    """One warm-up mail per sender; the user joins each room as its invite comes. Returns
    (room, ghost) per room, the room of sender 0 first."""
    warmups = [bench_mail(address, "warmup", k, sender=_sender(k)) for k in range(senders)]
    await asyncio.to_thread(deliver_burst, env.mail, warmups, address)
    user = env.user
    deadline = time.monotonic() + 60 + 5 * senders
    while True:
        invited = [r for r, state in user.invites.items() if r not in user.joined and not is_space(state)]
        await asyncio.gather(*(user.join(r) for r in invited))
        found = {marker_: (room, str(e["sender"])) for room in user.joined
                 for e in user.timeline.get(room, []) if (marker_ := mail_marker(e))}
        if all(marker("warmup", k) in found for k in range(senders)):
            return [found[marker("warmup", k)] for k in range(senders)]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{senders - len(found)} of {senders} rooms did not come")
        await user.sync_once(timeout_ms=500)


async def run(args: argparse.Namespace) -> dict[str, Figure]:
    m, senders = (100, 10) if args.quick else (300, 30)
    parallel = EmailConfig.defaults().parallel_deliveries
    started = time.monotonic()
    async with bench_env(args) as env:
        address, password = await env.mailbox("rooms")
        bridge = await env.start_bridge()
        watcher: RoomWatcher | None = None
        try:
            step("bridge started; logging in through the bot")
            await env.log_in(bridge, (address, password))
            step(f"{senders} senders: one warm-up mail each creates its room")
            targets = await _make_rooms(env, address, senders)
            first_room = targets[0][0]
            template = next(e for e in env.user.messages(first_room)
                            if mail_marker(e) == marker("warmup", 0))["content"]
            watcher = RoomWatcher(env.user, first_room, mail_marker,
                                  more_rooms=[room for room, _ in targets[1:]])
            await watcher.start()
            step(f"baseline: {m} appservice sends over {senders} rooms, "
                 f"{BASELINE_CONCURRENCY} at a time")
            appservice = await appservice_baseline(env, bridge, watcher, targets, template, m,
                                                   concurrency=BASELINE_CONCURRENCY)
        finally:
            await env.stop_bridge(bridge)
        try:
            assert watcher is not None
            step(f"bridge stopped; burst of {m} mails from {senders} senders, interleaved")
            msgs = [bench_mail(address, "burst", i, sender=_sender(i % senders)) for i in range(m)]
            smtp_s = await asyncio.to_thread(deliver_burst, env.mail, msgs, address)
            await asyncio.to_thread(wait_inbox_count, env.mail, address, m + senders, 120)
            fetch = await asyncio.to_thread(fetch_rates, env.mail, address)
            uid_order = [found.group(0).decode() for body in fetch.uid_order
                         if (found := _BODY_MARKER.search(body))]
            tags = [marker("burst", i) for i in range(m)]
            step("bridge starting as its own process: catch-up")
            process = BridgeProcess(env.config, env.root / "bridge-process.log")
            restarted = time.monotonic()
            try:
                await asyncio.to_thread(process.start)
                await watcher.wait_for(tags, timeout=300)
            finally:
                await asyncio.to_thread(process.stop)
        finally:
            if watcher is not None:
                await watcher.stop()
        db_label = env.db_label
    arrivals = sorted(watcher.arrivals[t] for t in tags)
    steady = (m - 1) / (arrivals[-1] - arrivals[0])
    in_order = all(
        [t for t in watcher.order if t in room_tags] == [t for t in uid_order if t in room_tags]
        for room_tags in ({marker("burst", i) for i in range(k, m, senders)} for k in range(senders)))
    figures: dict[str, Figure] = {
        "burst_rooms_ratio": round(steady / appservice.rate, 3),
        "burst_rooms_mails": m,
        "burst_rooms_rooms": senders,
        "burst_rooms_bridge_rate": round(steady, 1),
        "burst_rooms_synapse_rate": round(appservice.rate, 1),
        "burst_rooms_baseline_concurrency": BASELINE_CONCURRENCY,
        "burst_rooms_parallel_deliveries": parallel,
        "burst_rooms_first_s": round(arrivals[0] - restarted, 2),
        "burst_rooms_all_s": round(arrivals[-1] - restarted, 2),
        "burst_rooms_in_order": int(in_order),
        "burst_rooms_ratio_note": f"{m} mails from {senders} senders, bridge on {db_label}"
                                  + ("" if in_order else "; a room got its mails OUT OF ORDER"),
    }
    _report(figures, appservice, smtp_s, db_label, time.monotonic() - started)
    return figures


def _report(f: dict[str, Figure], appservice: AppserviceRate, smtp_s: float, db_label: str,
            total: float) -> None:
    m, rooms = f["burst_rooms_mails"], f["burst_rooms_rooms"]
    print()
    print(f"Burst over rooms: {m} mails from {rooms} senders ({rooms} rooms), interleaved, delivered "
          f"while the bridge was stopped; bridge on {db_label}, its own process, "
          f"imap.parallel_deliveries {f['burst_rooms_parallel_deliveries']}")
    print(f"  burst sent over SMTP in {smtp_s:.1f} s")
    print(f"  bridge: first mail at the client {f['burst_rooms_first_s']:.2f} s after the start, "
          f"all {m} after {f['burst_rooms_all_s']:.1f} s")
    print(f"  bridge delivery rate:          {f['burst_rooms_bridge_rate']:7.1f} mails/s "
          "(first to last arrival)")
    print(f"  baseline Synapse appservice:   {f['burst_rooms_synapse_rate']:7.1f} events/s ({m} PUTs "
          f"over {rooms} rooms, {f['burst_rooms_baseline_concurrency']} at a time, in "
          f"{appservice.send_s:.1f} s; all visible after {appservice.visible_s:.1f} s)")
    print(f"  burst_rooms_ratio:             {f['burst_rooms_ratio']:7.2f} (target >= 0.9)")
    print(f"  every room in mailbox (UID) order: {'yes' if f['burst_rooms_in_order'] else 'NO'}")
    print(f"  total run time {total:.0f} s")


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)

    async def go() -> None:
        write_figures(args.json_out, await run(args))

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
