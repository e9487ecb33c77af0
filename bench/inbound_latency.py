"""Inbound latency: one mail at a time, SMTP send -> event visible to the Matrix client.

Run: `.venv/bin/python -m bench.inbound_latency [-n 30] [--postgres] [--watch messages]`.
Baselines from the same run and the same servers: a plain IMAP client in IDLE (Dovecot pushes
EXISTS about 0.5 s after delivery: the floor of any IDLE-based bridge) and NOOP + UID SEARCH
polling every 10 ms (when the mail is in the mailbox at all). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time

from .env import BenchEnv, bench_env, common_arguments, run_main, step
from .imap_baseline import idle_latencies, poll_latencies
from .mails import bench_mail, deliver_timed, marker
from .mails import marker_of as mail_marker
from .observe import RoomWatcher
from .probe import StageProbe
from .stats import Summary, header, ratio

TARGET_S = 2.0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.inbound_latency", description=__doc__)
    p.add_argument("-n", type=int, default=30, help="mails per measurement (default 30)")
    p.add_argument("--gap", type=float, default=0.7,
                   help="pause after a mail was seen before sending the next (s, default 0.7; "
                        "below 0.5 Dovecot's IDLE timer, still running from its previous push, "
                        "announces the next mail early and the IDLE figures are too good)")
    p.add_argument("--watch", choices=["sync", "messages"], default="sync",
                   help="how the Matrix client sees events: /sync long-poll (default) or "
                        "polling /messages every 50 ms")
    p.add_argument("--profile", type=int, metavar="N", default=0,
                   help="cProfile the bridge phase and print the top N functions")
    common_arguments(p)
    return p.parse_args(argv)


async def _bridge_latencies(env: BenchEnv, args: argparse.Namespace, prof: cProfile.Profile | None
                            ) -> tuple[list[float], dict[str, list[float]]]:
    probe = StageProbe()
    bridge = await env.start_bridge(probe)
    watcher: RoomWatcher | None = None
    try:
        address, password = await env.mailbox("bridged")
        step("bridge started; logging in through the bot")
        await env.log_in(bridge, (address, password))
        # A first mail creates the direct chat; it is not measured (room creation, worker start).
        await asyncio.to_thread(deliver_timed, env.mail, bench_mail(address, "warmup", 0), address)
        room = await env.user.wait_for_room_invite(timeout=30)
        await env.user.join(room)
        await env.user.wait_for_event(room, lambda e: mail_marker(e) == marker("warmup", 0), timeout=30)
        await asyncio.sleep(1.0)  # let the engine go back to IDLE
        watcher = RoomWatcher(env.user, room, mail_marker, mode=args.watch)
        await watcher.start()
        probe.attach_logging()
        step(f"bridge: {args.n} mails, one at a time")
        sent: dict[str, float] = {}
        ids: dict[str, str] = {}
        if prof:
            prof.enable()
        for i in range(args.n):
            msg = bench_mail(address, "lat", i)
            tag = marker("lat", i)
            ids[tag] = str(msg["Message-ID"])
            sent[tag] = await asyncio.to_thread(deliver_timed, env.mail, msg, address)
            await watcher.wait_for([tag], timeout=30)
            await asyncio.sleep(args.gap)
        if prof:
            prof.disable()
    finally:
        probe.detach_logging()
        if watcher is not None:
            await watcher.stop()
        await env.stop_bridge(bridge)
    assert watcher is not None
    latencies = [watcher.arrivals[t] - sent[t] for t in sent]
    stages: dict[str, list[float]] = {"notice": [], "convert": [], "send": [], "visible": []}
    for tag, t0 in sent.items():
        notice = next((t for t in probe.noticed if t >= t0), None)
        queued, posted = probe.queued.get(ids[tag]), probe.posted.get(ids[tag])
        if notice is None or queued is None or posted is None:
            continue
        stages["notice"].append(notice - t0)
        stages["convert"].append(queued - notice)
        stages["send"].append(posted - queued)
        stages["visible"].append(watcher.arrivals[tag] - posted)
    return latencies, stages


async def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    prof = cProfile.Profile() if args.profile else None
    async with bench_env(args) as env:
        plain = await env.mailbox("plain")
        step(f"baseline: IMAP IDLE, {args.n} mails")
        idle = await idle_latencies(env.mail, *plain, n=args.n, gap_s=args.gap)
        step(f"baseline: SEARCH polling, {args.n} mails")
        poll = await asyncio.to_thread(poll_latencies, env.mail, plain[0], args.n, 0.1, 0.01)
        bridge, stages = await _bridge_latencies(env, args, prof)
        db_label = env.db_label
    total = time.monotonic() - started

    b, i, p = Summary.of(bridge), Summary.of(idle), Summary.of(poll)
    print()
    print(f"Inbound latency, {args.n} mails one at a time (~3 KB text+HTML, one correspondent, "
          f"one room), bridge on {db_label}, Matrix client watching by {args.watch}")
    print(header())
    print(b.row("bridge: SMTP send -> event at Matrix client"))
    print(i.row("baseline: SMTP send -> IMAP IDLE push"))
    print(p.row("baseline: SMTP send -> in mailbox (10 ms poll)"))
    print(f"  ratio bridge / IDLE baseline:  median {ratio(b.median, i.median)}, "
          f"p90 {ratio(b.p90, i.p90)}, max {ratio(b.max, i.max)}")
    print(f"  ratio bridge / in-mailbox floor: median {ratio(b.median, p.median)}")
    print(f"  bridge overhead over IDLE push (difference of medians): "
          f"{(b.median - i.median) * 1000:.0f} ms")
    within = sum(1 for x in bridge if x <= TARGET_S)
    print(f"  target (issue): mail visible in Matrix within {TARGET_S:.0f} s of delivery; "
          f"this run: {within}/{len(bridge)} within, p90 {b.p90:.2f} s, max {b.max:.2f} s")
    if stages["notice"]:
        print("  where the bridge's time goes (per mail, from in-process time stamps):")
        labels = {
            "notice": "delivery + IDLE push + SELECT + UID SEARCH",
            "convert": "FETCH + parse (worker) + convert",
            "send": "portal: ghost, room, PUT event, store",
            "visible": "event at client after send returned",
        }
        for key, label in labels.items():
            values = stages[key]
            print(f"    {label:<46} median {statistics.median(values) * 1000:6.0f} ms, "
                  f"max {max(values) * 1000:6.0f} ms")
    print(f"  total run time {total:.0f} s")
    if prof:
        print()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
