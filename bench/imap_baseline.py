"""What a plain IMAP client gets from the same servers: the baselines of the bridge's figures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import imaplib
import re
import ssl
import time

import aioimaplib

from devstack.stack import MailStack

from .mails import bench_mail, deliver_timed

_EXISTS = re.compile(rb"^\d+ EXISTS$", re.I)
_UID = re.compile(rb"UID (\d+)")


async def idle_latencies(stack: MailStack, address: str, password: str, n: int, gap_s: float,
                         kind: str = "idle") -> list[float]:
    """Per mail: SMTP send returned -> the server's EXISTS push to a client in IDLE."""
    client = aioimaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=stack.ssl_context(),
                                  timeout=30)
    await client.wait_hello_from_server()
    await _ok(client.login(address, password))
    await _ok(client.select("INBOX"))
    latencies: list[float] = []
    idle = await client.idle_start(timeout=600)
    try:
        for i in range(n):
            while not client.protocol.idle_queue.empty():
                client.protocol.idle_queue.get_nowait()
            sent = await asyncio.to_thread(deliver_timed, stack, bench_mail(address, kind, i), address)
            while True:
                lines = await client.wait_server_push(timeout=30)
                if isinstance(lines, list) and any(_EXISTS.match(bytes(x).strip()) for x in lines):
                    latencies.append(time.monotonic() - sent)
                    break
            await asyncio.sleep(gap_s)
    finally:
        client.idle_done()
        async with asyncio.timeout(10):
            await idle
        await client.logout()
    return latencies


async def idle_sessions_worker(host: str, port: int, ca_file: str, mailboxes: list[tuple[str, str]],
                               concurrency: int, read_line: Callable[[], Awaitable[str]]) -> None:
    """A bare aioimaplib client holding one IDLE session per mailbox (the baseline of idle
    mailboxes, run as a process of its own): prints `ready`, waits for a line of input, opens
    every session (implicit TLS, LOGIN, SELECT INBOX, IDLE), `concurrency` at a time, one TLS
    context for all, and holds them until its input ends."""
    ctx = ssl.create_default_context(cafile=ca_file)
    print("ready", flush=True)
    await read_line()
    limit = asyncio.Semaphore(concurrency)
    clients: list[aioimaplib.IMAP4_SSL] = []

    async def one(address: str, password: str) -> None:
        async with limit:
            client = aioimaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=30)
            await client.wait_hello_from_server()
            await _ok(client.login(address, password))
            await _ok(client.select("INBOX"))
            await client.idle_start(timeout=3600)
            clients.append(client)

    await asyncio.gather(*(one(a, p) for a, p in mailboxes))
    while await read_line():
        pass


def poll_latencies(stack: MailStack, address: str, n: int, gap_s: float, interval_s: float,
                   kind: str = "poll") -> list[float]:
    """Per mail: SMTP send returned -> NOOP + UID SEARCH polling (every `interval_s`) finds it.

    Blocking: run it in a thread. The delivery floor: the mail is in the mailbox at that point.
    """
    imap = stack.imap_client(address)
    latencies: list[float] = []
    try:
        imap.select("INBOX")
        known = _uids(imap)
        for i in range(n):
            sent = deliver_timed(stack, bench_mail(address, kind, i), address)
            deadline = sent + 30
            while True:
                imap.noop()
                now = _uids(imap)
                if now - known:
                    latencies.append(time.monotonic() - sent)
                    known = now
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mail {i} not in {address} within 30 s")
                time.sleep(interval_s)
            time.sleep(gap_s)
    finally:
        imap.logout()
    return latencies


@dataclass(frozen=True, slots=True)
class FetchRates:
    """Raw FETCH (BODY.PEEK[]) of a folder's mails by a plain client."""

    count: int
    batched_s: float
    single_s: float
    batch_size: int
    uid_order: list[bytes]  # message bodies in UID order

    @property
    def batched_rate(self) -> float:
        return self.count / self.batched_s

    @property
    def single_rate(self) -> float:
        return self.count / self.single_s


def fetch_rates(stack: MailStack, address: str, batch_size: int = 50) -> FetchRates:
    """Fetch the whole INBOX twice: in UID batches like the bridge, and one mail per command."""
    imap = stack.imap_client(address)
    try:
        imap.select("INBOX", readonly=True)
        uids = sorted(int(u) for u in imap.uid("SEARCH", "ALL")[1][0].split())
        started = time.monotonic()
        bodies: dict[int, bytes] = {}
        for i in range(0, len(uids), batch_size):
            chunk = uids[i:i + batch_size]
            _, data = imap.uid("FETCH", f"{chunk[0]}:{chunk[-1]}", "(UID BODY.PEEK[])")
            for item in data:
                if isinstance(item, tuple) and (m := _UID.search(item[0])):
                    bodies[int(m.group(1))] = item[1]
        batched = time.monotonic() - started
        started = time.monotonic()
        for uid in uids:
            imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
        single = time.monotonic() - started
    finally:
        imap.logout()
    if len(bodies) != len(uids):
        raise RuntimeError(f"fetched {len(bodies)} of {len(uids)} mails")
    return FetchRates(len(uids), batched, single, batch_size, [bodies[u] for u in uids])


def count_inbox(stack: MailStack, address: str) -> int:
    imap = stack.imap_client(address)
    try:
        imap.select("INBOX", readonly=True)
        return len(imap.uid("SEARCH", "ALL")[1][0].split())
    finally:
        imap.logout()


def wait_inbox_count(stack: MailStack, address: str, count: int, timeout: float) -> float:
    """Block until INBOX holds `count` mails; returns the seconds waited."""
    started = time.monotonic()
    while count_inbox(stack, address) < count:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{count} mails not in {address} within {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - started


def _uids(imap: imaplib.IMAP4) -> set[bytes]:
    status, data = imap.uid("SEARCH", "ALL")
    if status != "OK":
        raise RuntimeError(f"UID SEARCH failed: {data}")
    return set(data[0].split())


async def _ok(call: object) -> None:
    resp = await call  # type: ignore[misc]
    if resp.result != "OK":
        raise RuntimeError(f"IMAP command failed: {resp.lines}")
