"""Inbound catch-up throughput: M mails arrive while the bridge is down, then it starts.

Run: `.venv/bin/python -m bench.inbound_throughput [-m 200] [--postgres] [--in-process]`.
By default the restarted bridge is a real process (`python -m bridge -c CONFIG`), so its peak
RSS and CPU are its own; `--in-process` runs it in this process instead, which adds per-stage
time stamps and allows `--profile N` (cProfile). Baselines from the same run: Synapse's raw
appservice send rate (the bridge's own ghost sends M events, one after another, into the same
room through the client-server API) and the raw IMAP FETCH rate of a plain client.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import cProfile
from dataclasses import dataclass, field
import itertools
import os
import pstats
import re
import statistics
import sys
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from bridge.core.bridge import Bridge
from tests.helpers.bridge_process import BridgeProcess

from .env import BenchEnv, bench_env, common_arguments, run_main, step
from .imap_baseline import FetchRates, fetch_rates, wait_inbox_count
from .mails import bench_mail, deliver_burst, deliver_timed, marker
from .mails import marker_of as mail_marker
from .observe import RoomWatcher
from .probe import StageProbe
from .procstat import (
    cpu_seconds,
    parser_workers,
    reset_peak_rss,
    status_kib,
    tree_cpu_seconds,
)

_BODY_MARKER = re.compile(rb"bench-burst-\d+")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.inbound_throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", type=int, default=200, help="mails in the burst (default 200)")
    p.add_argument("--in-process", action="store_true",
                   help="restart the bridge inside this process (stage time stamps, --profile)")
    p.add_argument("--profile", type=int, metavar="N", default=0,
                   help="with --in-process: cProfile the catch-up and print the top N functions")
    common_arguments(p)
    args = p.parse_args(argv)
    if args.profile and not args.in_process:
        p.error("--profile needs --in-process")
    return args


# ---------------------------------------------------------------- baseline: appservice sends

@dataclass(frozen=True, slots=True)
class AppserviceRate:
    count: int
    send_s: float      # first PUT sent -> last PUT answered
    visible_s: float   # first PUT sent -> last event seen by the client

    @property
    def rate(self) -> float:
        return self.count / self.send_s


async def _appservice_baseline(env: BenchEnv, bridge: Bridge, watcher: RoomWatcher, room: str,
                               ghost: str, template: dict[str, Any], count: int) -> AppserviceRate:
    """`count` events like `template` from `ghost` into `room`: sequential PUTs, appservice token."""
    token = str(bridge.config["appservice.as_token"])
    base = f"{env.synapse.hs_url}/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message"
    txn = itertools.count(int(time.time() * 1000))
    tags = [marker("as", i) for i in range(count)]
    old = marker("warmup", 0)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        started = time.monotonic()
        for tag in tags:
            content = copy.deepcopy(template)
            for key in ("body", "formatted_body"):
                if isinstance(content.get(key), str):
                    content[key] = content[key].replace(old, tag)
            async with http.put(f"{base}/{next(txn)}", params={"user_id": ghost}, json=content) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"appservice send -> {resp.status} {await resp.text()}")
        sent = time.monotonic() - started
    await watcher.wait_for(tags, timeout=60)
    return AppserviceRate(count, sent, max(watcher.arrivals[t] for t in tags) - started)


# ---------------------------------------------------------------- the catch-up

@dataclass(slots=True)
class CatchUp:
    mode: str
    ready_s: float = 0.0         # start -> Bridge.start() returned / appservice port listening
    first_s: float = 0.0         # start -> first mail at the client
    all_s: float = 0.0           # start -> last mail at the client
    steady_rate: float = 0.0     # mails/s between the first and the last arrival
    in_order: bool = False
    memory: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    portal_s: list[float] = field(default_factory=list)   # handed to portal -> sent and stored
    between_s: list[float] = field(default_factory=list)  # previous stored -> next handed over


class _ServerCpu:
    """CPU seconds used by the servers (with their worker processes) between two readings."""

    def __init__(self, env: BenchEnv) -> None:
        self.pids = {"Synapse": env.synapse.process.pid, "Dovecot": env.mail.dovecot.process.pid,
                     "Postfix": env.mail.postfix.process.pid}
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        return {name: tree_cpu_seconds(pid) if pid else 0.0 for name, pid in self.pids.items()}

    def used(self) -> dict[str, float]:
        now = self._read()
        return {name: now[name] - self.start[name] for name in now}


def _summarise(catch: CatchUp, started: float, watcher: RoomWatcher, tags: list[str],
               uid_order: list[str]) -> None:
    arrivals = sorted(watcher.arrivals[t] for t in tags)
    wanted = set(tags)
    catch.first_s = arrivals[0] - started
    catch.all_s = arrivals[-1] - started
    if len(arrivals) > 1:
        catch.steady_rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    catch.in_order = [m for m in watcher.order if m in wanted] == uid_order


def _worker_memory(workers: list[int]) -> str:
    each = ", ".join(f"{(status_kib(p, 'VmHWM') or 0) / 1024:.0f} MiB" for p in workers)
    return f"parser workers: {len(workers)} alive, peak RSS (VmHWM) {each or '-'}"


async def _catch_up_process(env: BenchEnv, watcher: RoomWatcher, tags: list[str],
                            uid_order: list[str]) -> CatchUp:
    catch = CatchUp("bridge restarted as its own process (python -m bridge)")
    servers = _ServerCpu(env)
    bench_cpu = cpu_seconds() or 0.0
    process = BridgeProcess(env.config, env.root / "bridge-process.log")
    started = time.monotonic()
    try:
        await asyncio.to_thread(process.start)
        catch.ready_s = time.monotonic() - started
        await watcher.wait_for(tags, timeout=240)
        assert process.process is not None
        pid = process.process.pid
        workers = parser_workers(pid)
        catch.cpu = {"bridge process": cpu_seconds(pid) or 0.0,
                     "parser workers": sum(cpu_seconds(p) or 0.0 for p in workers),
                     **servers.used(), "bench (Matrix client)": (cpu_seconds() or 0.0) - bench_cpu}
        catch.memory = [
            f"bridge process: peak RSS (VmHWM) {(status_kib(pid, 'VmHWM') or 0) / 1024:.0f} MiB, "
            f"RSS at the end {(status_kib(pid, 'VmRSS') or 0) / 1024:.0f} MiB",
            _worker_memory(workers),
        ]
    finally:
        stopping = time.monotonic()
        await asyncio.to_thread(process.stop)
        stop_s = time.monotonic() - stopping
    if stop_s > 10:
        catch.memory.append(f"(the bridge process took {stop_s:.0f} s to end after SIGTERM: "
                            "it did not shut down and was killed)")
    _summarise(catch, started, watcher, tags, uid_order)
    return catch


async def _catch_up_in_process(env: BenchEnv, watcher: RoomWatcher, tags: list[str],
                               uid_order: list[str], message_ids: set[str],
                               prof: cProfile.Profile | None) -> CatchUp:
    catch = CatchUp("bridge restarted inside the bench process")
    peak_reset = reset_peak_rss()
    rss_before = status_kib("self", "VmRSS") or 0
    servers = _ServerCpu(env)
    own_cpu = cpu_seconds() or 0.0
    probe = StageProbe()
    if prof:
        prof.enable()
    started = time.monotonic()
    bridge = await env.start_bridge(probe)
    try:
        catch.ready_s = time.monotonic() - started
        await watcher.wait_for(tags, timeout=240)
        if prof:
            prof.disable()
        workers = parser_workers()
        catch.cpu = {"bench process (bridge + Matrix client)": (cpu_seconds() or 0.0) - own_cpu,
                     "parser workers": sum(cpu_seconds(p) or 0.0 for p in workers),
                     **servers.used()}
        since = "since just before start()" if peak_reset else "over the whole run"
        catch.memory = [
            f"bench process (bridge in-process): RSS {rss_before / 1024:.0f} MiB before start(), "
            f"peak RSS (VmHWM) {(status_kib('self', 'VmHWM') or 0) / 1024:.0f} MiB {since}",
            _worker_memory(workers),
        ]
    finally:
        await env.stop_bridge(bridge)
    _summarise(catch, started, watcher, tags, uid_order)
    spans = sorted((probe.queued[i], probe.posted[i]) for i in message_ids
                   if i in probe.queued and i in probe.posted)
    catch.portal_s = [posted - queued for queued, posted in spans]
    catch.between_s = [nxt[0] - cur[1] for cur, nxt in itertools.pairwise(spans)]
    return catch


# ---------------------------------------------------------------- the run

async def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    prof = cProfile.Profile() if args.profile else None
    m = args.m
    async with bench_env(args) as env:
        address, password = await env.mailbox("burst")
        bridge = await env.start_bridge()
        watcher: RoomWatcher | None = None
        try:
            step("bridge started; logging in through the bot")
            await env.log_in(bridge, (address, password))
            await asyncio.to_thread(deliver_timed, env.mail, bench_mail(address, "warmup", 0), address)
            room = await env.user.wait_for_room_invite(timeout=30)
            await env.user.join(room)
            first = await env.user.wait_for_event(
                room, lambda e: mail_marker(e) == marker("warmup", 0), timeout=30)
            watcher = RoomWatcher(env.user, room, mail_marker)
            await watcher.start()
            step(f"baseline: {m} appservice sends into the room")
            appservice = await _appservice_baseline(env, bridge, watcher, room, first["sender"],
                                                    first["content"], m)
        finally:
            await env.stop_bridge(bridge)
        try:
            assert watcher is not None
            step(f"bridge stopped; burst of {m} mails, then the IMAP FETCH baseline")
            msgs = [bench_mail(address, "burst", i) for i in range(m)]
            smtp_s = await asyncio.to_thread(deliver_burst, env.mail, msgs, address)
            queue_s = await asyncio.to_thread(wait_inbox_count, env.mail, address, m + 1, 120)
            fetch: FetchRates = await asyncio.to_thread(fetch_rates, env.mail, address)
            uid_order = [found.group(0).decode() for body in fetch.uid_order
                         if (found := _BODY_MARKER.search(body))]
            tags = [marker("burst", i) for i in range(m)]
            step("bridge starting: catch-up")
            if args.in_process:
                catch = await _catch_up_in_process(env, watcher, tags, uid_order,
                                                   {str(x["Message-ID"]) for x in msgs}, prof)
            else:
                catch = await _catch_up_process(env, watcher, tags, uid_order)
        finally:
            if watcher is not None:
                await watcher.stop()
        db_label = env.db_label
    total = time.monotonic() - started
    _report(args, catch, appservice, fetch, smtp_s, queue_s, db_label, total)
    if prof:
        print()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)


def _report(args: argparse.Namespace, catch: CatchUp, appservice: AppserviceRate, fetch: FetchRates,
            smtp_s: float, queue_s: float, db_label: str, total: float) -> None:
    m = args.m
    rate = m / catch.all_s
    ready = "Bridge.start() returned" if args.in_process else "appservice port listening"
    print()
    print(f"Inbound catch-up, {m} mails (~3 KB text+HTML, one correspondent, one room) delivered "
          f"while the bridge was stopped; bridge on {db_label}, {catch.mode}")
    print(f"  burst: {m} mails sent over SMTP in {smtp_s:.1f} s; all in INBOX {queue_s:.1f} s later")
    print(f"  bridge: {ready} after {catch.ready_s:.2f} s; first mail at the client after "
          f"{catch.first_s:.2f} s, all {m} after {catch.all_s:.1f} s")
    print(f"  bridge catch-up throughput:      {rate:7.1f} mails/s overall (from start), "
          f"{catch.steady_rate:.1f} mails/s steady (first to last arrival)")
    print(f"  baseline Synapse appservice send:{appservice.rate:7.1f} events/s ({appservice.count} "
          f"sequential PUTs by the ghost into the room in {appservice.send_s:.1f} s; all visible "
          f"after {appservice.visible_s:.1f} s)")
    print(f"  baseline IMAP FETCH BODY.PEEK[]: {fetch.batched_rate:7.0f} mails/s in UID batches of "
          f"{fetch.batch_size}, {fetch.single_rate:.0f} mails/s one per command ({fetch.count} mails)")
    print(f"  ratio bridge / appservice send:  {catch.steady_rate / appservice.rate:.2f} steady, "
          f"{rate / appservice.rate:.2f} overall")
    print(f"  ratio bridge / IMAP FETCH:       {catch.steady_rate / fetch.single_rate:.3f} steady "
          f"(vs one FETCH per command)")
    if catch.portal_s and catch.between_s:
        print(f"  per mail (medians): portal (ghost, room, PUT event, store) "
              f"{statistics.median(catch.portal_s) * 1000:.0f} ms; between mails (index row, "
              f"checkpoint, parse + convert the next) {statistics.median(catch.between_s) * 1000:.0f} "
              f"ms; raw appservice PUT {appservice.send_s / appservice.count * 1000:.0f} ms")
    print(f"  order at the client = mailbox UID order: {'yes' if catch.in_order else 'NO'}")
    for line in catch.memory:
        print(f"  memory: {line}")
    cpu = ", ".join(f"{k} {v:.1f} s" for k, v in catch.cpu.items())
    print(f"  CPU during catch-up ({catch.all_s:.1f} s wall, {os.cpu_count()} cores): {cpu}")
    print(f"  total run time {total:.0f} s")


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
