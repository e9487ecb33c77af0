"""Many idle mailboxes: memory and CPU per mailbox, and the time to connect them all again.

Run: `.venv/bin/python -m bench.idle [--quick] [--json-out PATH] [--accounts N] [--postgres]`.

N mailboxes (1,000; `--quick`: 100) are logged in to the bridge through its provisioning API;
then the bridge, a real process (`python -m bridge -c CONFIG`), is restarted and measured:

- the time from the first of those IMAP sessions to all N waiting in IDLE, as Dovecot shows it
  (its process titles): the same clock for the bridge and for the baseline, a bare aioimaplib
  client (its own process) opening the same sessions (login, SELECT INBOX, IDLE) with the same
  concurrency (`imap.connect_concurrency`);
- RSS per mailbox: (RSS with N mailboxes idle - RSS of a fresh bridge without logins) / N, and
  for the baseline (RSS with N sessions idle - RSS before opening them) / N;
- CPU of the bridge process over a window (60 s; `--quick`: 15 s) while every mailbox is idle.

`--json-out PATH` writes the figures as one flat JSON object. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
import json
from pathlib import Path
import resource
import sys
import time
from typing import Any
import uuid

import aiohttp

from bridge.__main__ import example_for
from bridge.connectors import load_connector
from bridge.core.config import Config
from devstack.ports import free_port
from tests.helpers.bridge_process import REPO, BridgeProcess

from .env import BenchEnv, bench_env, common_arguments, run_main, step
from .imap_baseline import idle_sessions_worker
from .output import Figure, output_arguments, write_figures
from .procstat import children, cmdline, cpu_seconds, status_kib

SECRET = "bench-idle-" + uuid.uuid4().hex
PROVISION_CONCURRENCY = 16


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    output_arguments(p)
    p.add_argument("--accounts", type=int, help="idle mailboxes (default 1000, --quick 100)")
    p.add_argument("--window", type=float, help="CPU window in seconds (default 60, --quick 15)")
    p.add_argument("--concurrency", type=int, default=20,
                   help="IMAP logins at once, bridge (imap.connect_concurrency) and baseline")
    common_arguments(p)
    args = p.parse_args(argv)
    args.accounts = args.accounts or (100 if args.quick else 1000)
    args.window = args.window or (15.0 if args.quick else 60.0)
    return args


# ---------------------------------------------------------------- Dovecot's view


class SessionWatch:
    """IMAP sessions of the bench's users as Dovecot's process titles show them
    (`imap [user ip IDLE]` with verbose_proctitle)."""

    def __init__(self, master_pid: int, prefix: str) -> None:
        self.master = master_pid
        self.marker = f"[{prefix}"

    def count(self) -> tuple[int, int]:
        """(sessions of bench users, of which in IDLE)."""
        sessions = idle = 0
        for pid in children(self.master):
            title = cmdline(pid)
            if self.marker in title:
                sessions += 1
                idle += title.rstrip().endswith(" IDLE]")
        return sessions, idle

    def wait(self, pred: Callable[[int, int], bool], timeout: float, what: str) -> float:
        """Poll until `pred(sessions, idle)`; returns time.monotonic() of the first sight."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if pred(*self.count()):
                return now
            if now > deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f} s (now {self.count()})")
            time.sleep(0.02)

    def opening(self, n: int, timeout: float) -> tuple[float, float]:
        """(first session seen, all `n` in IDLE), time.monotonic()."""
        first = self.wait(lambda s, _: s > 0, timeout, "the first session")
        done = self.wait(lambda _, i: i >= n, timeout, f"{n} sessions in IDLE")
        return first, done


# ---------------------------------------------------------------- the bridge


def _bridge_config(env: BenchEnv, concurrency: int) -> tuple[Path, int]:
    path = env.root / "bridge-idle.yaml"
    config = Config.load(env.config, example_for(load_connector("email")))
    port = free_port()
    config["provisioning.enabled"] = True
    config["provisioning.port"] = port
    config["provisioning.shared_secret"] = SECRET
    config["network.imap.connect_concurrency"] = concurrency
    config.path = path
    config.save()
    return path, port


async def _provision(port: int, user_id: str, mailboxes: list[tuple[str, str]], imap: str,
                     smtp: str) -> None:
    """Log every mailbox in through the provisioning API (a few at a time)."""
    base = f"http://127.0.0.1:{port}/_matrix/provision/v3"
    headers = {"Authorization": f"Bearer {SECRET}"}
    limit = asyncio.Semaphore(PROVISION_CONCURRENCY)

    async def call(session: aiohttp.ClientSession, path: str, body: Any = None) -> dict[str, Any]:
        async with session.post(base + path, json=body, params={"user_id": user_id},
                                headers=headers) as resp:
            data: dict[str, Any] = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"provisioning {path}: {resp.status} {data}")
            return data

    async def one(session: aiohttp.ClientSession, address: str, password: str) -> None:
        async with limit:
            step_ = await call(session, "/login/start/default")
            for answer in ({"address": address}, {"password": password},
                           {"imap": imap, "smtp": smtp, "name": ""}):
                path = f"/login/step/{step_['login_id']}/{step_['step_id']}/user_input"
                step_ = await call(session, path, answer)
            if step_["type"] != "complete":
                raise RuntimeError(f"login of {address} did not complete: {step_}")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, a, p) for a, p in mailboxes))


def _rss(pid: int) -> int:
    value = status_kib(pid, "VmRSS")
    if value is None:
        raise RuntimeError(f"process {pid} is gone")
    return value


async def _settle(seconds: float) -> None:
    await asyncio.sleep(seconds)  # a benchmark's measuring pause, not a test's wait


async def _bridge_phase(env: BenchEnv, args: argparse.Namespace, watch: SessionWatch,
                        mailboxes: list[tuple[str, str]]) -> dict[str, float]:
    n = len(mailboxes)
    config, port = _bridge_config(env, args.concurrency)
    process = BridgeProcess(config, env.root / "bridge-process.log")
    # implicit TLS, as the baseline
    servers = (f"127.0.0.1:{env.mail.imaps_port}:tls",
               f"127.0.0.1:{env.mail.submission_port}:starttls")
    try:
        await asyncio.to_thread(process.start, 60)
        assert process.process is not None
        await _settle(2)
        rss_empty = _rss(process.process.pid)
        step(f"bridge without logins: RSS {rss_empty / 1024:.0f} MiB; logging in {n} mailboxes")
        started = time.monotonic()
        await _provision(port, env.user.user_id, mailboxes, *servers)
        await asyncio.to_thread(watch.wait, lambda _, i: i >= n, 600, "the new logins idle")
        step(f"{n} logins in {time.monotonic() - started:.0f} s; restarting the bridge")
        await asyncio.to_thread(process.stop)
        await asyncio.to_thread(watch.wait, lambda s, _: s == 0, 120, "the old sessions gone")
        spawned = time.monotonic()
        await asyncio.to_thread(process.start, 120)
        assert process.process is not None
        pid = process.process.pid
        first, done = await asyncio.to_thread(watch.opening, n, 600)
        step(f"bridge: all {n} idle {done - spawned:.1f} s after the restart "
             f"({done - first:.1f} s from its first session)")
        await _settle(5)
        rss_full = _rss(pid)
        cpu_before = cpu_seconds(pid) or 0.0
        window_start = time.monotonic()
        await _settle(args.window)
        cpu = (cpu_seconds(pid) or 0.0) - cpu_before
        window = time.monotonic() - window_start
        sessions, idle = watch.count()
        if idle < n:
            step(f"warning: only {idle} of {n} sessions in IDLE after the window ({sessions} open)")
    finally:
        await asyncio.to_thread(process.stop)
    return {
        "bridge_open_s": done - first,
        "bridge_restart_s": done - spawned,
        "bridge_rss_empty_kib": rss_empty,
        "bridge_rss_kib": rss_full,
        "bridge_rss_per_mailbox_kib": (rss_full - rss_empty) / n,
        "idle_cpu_percent": 100 * cpu / window,
        "idle_cpu_window_s": window,
    }


# ---------------------------------------------------------------- the baseline


async def _baseline_phase(env: BenchEnv, args: argparse.Namespace, watch: SessionWatch,
                          mailboxes: list[tuple[str, str]]) -> dict[str, float]:
    n = len(mailboxes)
    await asyncio.to_thread(watch.wait, lambda s, _: s == 0, 120, "the bridge's sessions gone")
    spec = env.root / "baseline.json"
    await asyncio.to_thread(spec.write_text, json.dumps({
        "host": env.mail.host, "port": env.mail.imaps_port, "ca_file": str(env.mail.ca_file),
        "mailboxes": mailboxes, "concurrency": args.concurrency}))
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.idle", "--baseline-worker", str(spec), cwd=REPO,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert worker.stdin is not None and worker.stdout is not None
    try:
        if (await worker.stdout.readline()).strip() != b"ready":
            raise RuntimeError("the baseline worker did not start")
        await _settle(1)
        rss_before = _rss(worker.pid)
        worker.stdin.write(b"go\n")
        await worker.stdin.drain()
        first, done = await asyncio.to_thread(watch.opening, n, 600)
        step(f"baseline: all {n} idle {done - first:.1f} s from its first session")
        await _settle(5)
        rss_after = _rss(worker.pid)
    finally:
        worker.stdin.close()  # the worker exits when its input ends
        try:
            async with asyncio.timeout(60):
                await worker.wait()
        except TimeoutError:
            worker.kill()
            await worker.wait()
    return {"baseline_open_s": done - first,
            "baseline_rss_per_session_kib": (rss_after - rss_before) / n}


def _baseline_worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    asyncio.run(idle_sessions_worker(spec["host"], spec["port"], spec["ca_file"],
                                     [tuple(m) for m in spec["mailboxes"]], spec["concurrency"],
                                     _stdin_line))


async def _stdin_line() -> str:
    return await asyncio.to_thread(sys.stdin.readline)


# ---------------------------------------------------------------- main


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it


async def _main(args: argparse.Namespace, load: str) -> None:
    async with bench_env(args) as env:
        run = uuid.uuid4().hex[:6]
        users = {f"idle{run}x{i}": f"pw-{run}-{i}" for i in range(args.accounts)}
        addresses = await asyncio.to_thread(env.mail.add_users, users)
        mailboxes = list(zip(addresses, users.values(), strict=True))
        assert env.mail.dovecot.process.pid is not None
        watch = SessionWatch(env.mail.dovecot.process.pid, f"idle{run}x")
        step(f"{len(mailboxes)} mailboxes created")
        bridge = await _bridge_phase(env, args, watch, mailboxes)
        baseline = await _baseline_phase(env, args, watch, mailboxes)
    figures: dict[str, Figure] = {
        "idle_accounts": args.accounts,
        "idle_rss_ratio": bridge["bridge_rss_per_mailbox_kib"] / baseline["baseline_rss_per_session_kib"],
        "idle_cpu_percent": bridge["idle_cpu_percent"],
        "reconnect_ratio": bridge["bridge_open_s"] / baseline["baseline_open_s"],
        **{k: v for k, v in bridge.items() if k != "idle_cpu_percent"},
        **baseline,
        "connect_concurrency": args.concurrency,
        "idle_cpu_percent_note": f"bridge database {env.db_label}; load average at start {load}",
    }
    _report(figures)
    write_figures(args.json_out, figures)


def _report(f: dict[str, Any]) -> None:
    n = f["idle_accounts"]
    print(f"\nIdle mailboxes: {n} ({f['idle_cpu_percent_note']})")
    print(f"  RSS per mailbox: bridge {f['bridge_rss_per_mailbox_kib']:.0f} KiB, bare aioimaplib "
          f"IDLE session {f['baseline_rss_per_session_kib']:.0f} KiB -> ratio "
          f"{f['idle_rss_ratio']:.2f} (target <= 1.1)")
    print(f"  bridge RSS: {f['bridge_rss_empty_kib'] / 1024:.0f} MiB without logins, "
          f"{f['bridge_rss_kib'] / 1024:.0f} MiB with {n} idle")
    print(f"  CPU while idle: {f['idle_cpu_percent']:.3f} % over {f['idle_cpu_window_s']:.0f} s "
          f"(target <= 0.3 % at 1,000)")
    print(f"  first session -> all {n} in IDLE: bridge {f['bridge_open_s']:.2f} s, baseline "
          f"{f['baseline_open_s']:.2f} s -> ratio {f['reconnect_ratio']:.2f} (target <= 1.3); "
          f"bridge restart (process spawned) -> all in IDLE {f['bridge_restart_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--baseline-worker"]:
        _baseline_worker(argv[1])
        return 0
    args = _arguments(argv)
    _raise_fd_limit()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return run_main(lambda: _main(args, load))


if __name__ == "__main__":
    sys.exit(main())
