"""Inbound latency: one mail at a time, SMTP send -> event visible to the Matrix client.

Run: `.venv/bin/python -m bench.inbound_latency [-n 30] [--postgres] [--watch messages] [--encrypted]
[--quick] [--json-out PATH]`.
`--encrypted` runs the bridge a second time with encrypted portals (the user has an E2EE device,
matrix-nio, the room keys are shared with) and prints the ratio of the bridge's own share of the
latency (delivery -> event stored by the homeserver, from in-process time stamps) to the plain run.
Baselines from the same run and the same servers: a plain IMAP client in IDLE (Dovecot pushes
EXISTS about 0.5 s after delivery: the floor of any IDLE-based bridge) and NOOP + UID SEARCH
polling every 10 ms (when the mail is in the mailbox at all). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
import cProfile
import itertools
import pstats
import statistics
import sys
import time

from devstack.e2ee_client import E2EEUser
from devstack.matrix_client import Event

from .env import BenchEnv, bench_env, common_arguments, run_main, step
from .imap_baseline import idle_latencies, poll_latencies
from .mails import bench_mail, deliver_timed, marker
from .mails import marker_of as mail_marker
from .observe import RoomWatcher
from .output import output_arguments, write_figures
from .probe import StageProbe
from .stats import Summary, header, ratio

TARGET_S = 2.0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.inbound_latency", description=__doc__)
    p.add_argument("-n", type=int, default=None,
                   help="mails per measurement (default 30, 8 with --quick)")
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
    output_arguments(p)
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 8 if args.quick else 30
    return args


def _arrival_order(kind: str) -> Callable[[Event], str | None]:
    """Markers for encrypted events, by arrival: the watcher cannot read them, but mails are
    sent one at a time and each becomes exactly one event."""
    count = itertools.count()

    def marker_of(event: Event) -> str | None:
        if event.get("type") != "m.room.encrypted":
            return None
        return marker(kind, next(count))
    return marker_of


async def _bridge_latencies(env: BenchEnv, args: argparse.Namespace, prof: cProfile.Profile | None,
                            *, encrypted: bool = False
                            ) -> tuple[list[float], dict[str, list[float]]]:
    probe = StageProbe()
    bridge = await env.start_bridge(probe, encrypted=encrypted)
    watcher: RoomWatcher | None = None
    device: E2EEUser | None = None
    try:
        address, password = await env.mailbox("bridged-e2ee" if encrypted else "bridged")
        if encrypted:  # a device with keys, as the user's client has
            device = E2EEUser(env.synapse.hs_url, env.user.user_id, env.root / "nio")
            await device.login(env.password)
        step("bridge started; logging in through the bot")
        await env.log_in(bridge, (address, password))
        # A first mail creates the direct chat; it is not measured (room creation, worker start).
        await asyncio.to_thread(deliver_timed, env.mail, bench_mail(address, "warmup", 0), address)
        room = await env.user.wait_for_room_invite(timeout=30)
        await env.user.join(room)
        if encrypted:
            await env.user.wait_for_event(room, lambda e: e.get("type") == "m.room.encrypted",
                                          timeout=30)
        else:
            await env.user.wait_for_event(room, lambda e: mail_marker(e) == marker("warmup", 0),
                                          timeout=30)
        await asyncio.sleep(1.0)  # let the engine go back to IDLE
        watcher = RoomWatcher(env.user, room, _arrival_order("lat") if encrypted else mail_marker,
                              mode=args.watch)
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
        if device is not None:
            await device.close()
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
        encrypted: tuple[list[float], dict[str, list[float]]] | None = None
        if args.encrypted:
            step(f"bridge with encrypted portals: {args.n} mails, one at a time")
            encrypted = await _bridge_latencies(env, args, None, encrypted=True)
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
    if encrypted is not None:
        _print_encrypted(bridge, stages, *encrypted)
    print(f"  total run time {total:.0f} s")
    write_figures(args.json_out, {
        "inbound_latency_ratio": round(b.median / i.median, 3) if i.median > 0 else None,
        "inbound_latency_ratio_note": f"median of {args.n} mails, SMTP send -> event at the "
                                      f"Matrix client, over a plain IMAP IDLE client's median",
        "inbound_latency_median_ms": round(b.median * 1000, 1),
        "inbound_latency_idle_median_ms": round(i.median * 1000, 1),
    })
    if prof:
        print()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)


def _own_share(stages: dict[str, list[float]]) -> list[float]:
    """The bridge's own time per mail: from the IDLE push to the homeserver's answer to the send
    (what encryption can add to: convert, encrypt, upload, send)."""
    return [c + s for c, s in zip(stages["convert"], stages["send"], strict=True)]


def _print_encrypted(plain: list[float], plain_stages: dict[str, list[float]],
                     enc: list[float], enc_stages: dict[str, list[float]]) -> None:
    e = Summary.of(enc)
    print(e.row("bridge, encrypted portal: SMTP send -> event"))
    print(f"  ratio encrypted / plain end to end: median {ratio(e.median, Summary.of(plain).median)}")
    own_plain, own_enc = _own_share(plain_stages), _own_share(enc_stages)
    if own_plain and own_enc:
        mp, me = statistics.median(own_plain), statistics.median(own_enc)
        print(f"  bridge's own share (FETCH+parse+convert+send), median: plain {mp * 1000:.0f} ms, "
              f"encrypted {me * 1000:.0f} ms, ratio {ratio(me, mp)} "
              f"(issue target: encryption adds less than 10 %)")


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
