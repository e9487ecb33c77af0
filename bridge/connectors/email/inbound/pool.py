"""Parsing off the event loop, in worker processes that can be killed.

Why processes and not a thread: the time budget must hold even when a hostile mail makes the
stdlib parser (or a C extension under it) spin. A thread cannot be stopped; a process can be
killed and replaced. Workers are fresh `python -c <bootstrap>` subprocesses driven through asyncio
pipes, so no fork of the (threaded) bridge process happens and `__main__` is never re-imported.
Each worker caps its own address space, so a mail that makes the parser balloon is rejected
instead of taking the bridge down.

The worker returns its result as a pickle. Only our own worker code produces it; a parse bug that
could forge one would already run code as the bridge's user.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
import pickle
import struct
import sys

from .limits import MailRejected, ParseLimits, ParserUnavailable, too_large
from .model import ParsedEmail

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
# Workers import the parser modules only (`bridge.connectors.email` has a light __init__).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[4])
DEFAULT_MEMORY_LIMIT = 2 * 1024 * 1024 * 1024
# Starting a worker (interpreter + imports) is not part of a mail's time budget.
_START_TIMEOUT_S = 30.0


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, memory_limit: int) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge.connectors.email.inbound.worker",
            str(memory_limit),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)},
        )
        worker = cls(proc)
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                status, _ = await worker._read()
        except (TimeoutError, asyncio.IncompleteReadError, pickle.UnpicklingError):
            await worker.kill()
            raise ParserUnavailable("the mail parser could not be started") from None
        if status != "ready":
            await worker.kill()
            raise ParserUnavailable("the mail parser could not be started")
        return worker

    async def _read(self) -> tuple[str, object]:
        assert self.proc.stdout is not None
        header = await self.proc.stdout.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        data = await self.proc.stdout.readexactly(size)
        message: tuple[str, object] = pickle.loads(data)
        return message

    async def run(self, raw: bytes, limits: ParseLimits) -> tuple[str, object]:
        assert self.proc.stdin is not None
        job = pickle.dumps((limits, raw), protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(_HEADER.pack(len(job)) + job)
        await self.proc.stdin.drain()
        return await self._read()

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self._reap()

    async def stop(self) -> None:
        """Ask the worker to exit (EOF on stdin), killing it if it does not."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(5.0):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
        await self._reap()

    async def _reap(self) -> None:
        await self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        # Drain what is left so the transport closes cleanly.
        if self.proc.stdout is not None:
            try:
                await self.proc.stdout.read()
            except (ConnectionError, OSError):
                pass


class _WorkerDied(Exception):
    """The worker process ended in the middle of a job."""


class ParserPool:
    """Up to `size` parser processes; a worker that overruns the time budget is killed."""

    def __init__(self, size: int = 2, *, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        self.size = size
        self.memory_limit = memory_limit
        self._idle: list[_Worker] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    async def parse(self, raw: bytes, limits: ParseLimits) -> ParsedEmail:
        if self._closed:
            raise RuntimeError("the parser pool is closed")
        if len(raw) > limits.max_bytes:
            raise MailRejected(too_large(len(raw), limits))
        async with self._slots:
            status, value = await self._run(raw, limits)
        if status == "ok" and isinstance(value, ParsedEmail):
            value.raw = raw
            return value
        if status == "rejected":
            raise MailRejected(str(value))
        log.warning("mail parser failed: %s", value)
        raise MailRejected("the message could not be parsed")

    async def _run(self, raw: bytes, limits: ParseLimits) -> tuple[str, object]:
        # A reused worker may have died while idle (killed from outside); a mail only gets the
        # blame for the death of a worker that was alive and fresh for it.
        reused = None
        while self._idle and reused is None:
            candidate = self._idle.pop()
            if candidate.alive:
                reused = candidate
            else:
                await candidate.kill()
        if reused is not None:
            try:
                return await self._run_on(reused, raw, limits)
            except _WorkerDied:
                log.warning("an idle mail parser worker had died; retrying with a new one")
        try:
            return await self._run_on(await _Worker.start(self.memory_limit), raw, limits)
        except _WorkerDied:
            # Out of memory, or the parser crashed the interpreter.
            raise MailRejected("the message could not be parsed") from None

    async def _run_on(self, worker: _Worker, raw: bytes, limits: ParseLimits) -> tuple[str, object]:
        keep = False
        try:
            try:
                async with asyncio.timeout(limits.time_budget_s):
                    result = await worker.run(raw, limits)
            except TimeoutError:
                raise MailRejected("the message took too long to process") from None
            except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError):
                raise _WorkerDied from None
            keep = True
            return result
        finally:
            if keep and not self._closed:
                self._idle.append(worker)
            else:
                await worker.kill()

    def worker_pids(self) -> list[int]:
        """Process ids of the idle workers (for monitoring and tests)."""
        return [w.proc.pid for w in self._idle]

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in idle:
            await worker.stop()


_default_pool: ParserPool | None = None
_default_loop: asyncio.AbstractEventLoop | None = None


def default_pool() -> ParserPool:
    """The process-wide pool, created on first use in the running event loop."""
    global _default_pool, _default_loop
    loop = asyncio.get_running_loop()
    if _default_pool is None or _default_loop is not loop or _default_pool._closed:
        _default_pool = ParserPool()
        _default_loop = loop
    return _default_pool


async def close_default_pool() -> None:
    global _default_pool
    if _default_pool is not None:
        pool, _default_pool = _default_pool, None
        await pool.close()
