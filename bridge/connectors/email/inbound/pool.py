"""Parsing off the event loop, in worker processes that can be killed.

Why processes and not a thread: the time budget must hold even when a hostile mail makes the
stdlib parser (or a C extension under it) spin. A thread cannot be stopped; a process can be
killed and replaced. Workers are fresh `python -c <bootstrap>` subprocesses driven through asyncio
pipes, so no fork of the (threaded) bridge process happens and `__main__` is never re-imported.
Each worker caps its own address space, so a mail that makes the parser balloon is rejected
instead of taking the bridge down.

The worker returns its result as a pickle. Only our own worker code produces it; a parse bug that
could forge one would already run code as the bridge's user. The mail goes to the worker as bytes
after a small pickled header, and a big attachment comes back as a file (the worker decodes it
straight into a directory of its own for the job): neither is copied into a pickle. The pool
reads such a file into the attachment and removes the job's directory whatever became of the job.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
import pickle
import shutil
import struct
import sys
import tempfile

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

    async def run(self, raw: bytes, limits: ParseLimits, spool_dir: Path) -> tuple[str, object]:
        assert self.proc.stdin is not None
        job = pickle.dumps((limits, len(raw), str(spool_dir)), protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(_HEADER.pack(len(job)) + job)
        self.proc.stdin.write(raw)
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


def _load_result(path: Path, spool_dir: Path) -> tuple[str, object]:
    """A result the worker pickled into a file of this job's directory."""
    if path.parent != spool_dir:
        return "failed", "a result outside the job's directory"
    with path.open("rb") as source:
        result: tuple[str, object] = pickle.load(source)
    return result


def _load_spooled(parsed: ParsedEmail, spool_dir: Path) -> None:
    """Read the attachments the worker left in `spool_dir` into memory."""
    for attachment in parsed.attachments:
        if attachment.path is not None:
            path = Path(attachment.path)
            if path.parent != spool_dir:  # only files of this job's own directory
                raise MailRejected("the message could not be parsed")
            attachment.data = path.read_bytes()
            attachment.path = None


class _WorkerDied(Exception):
    """The worker process ended in the middle of a job."""


class ParserPool:
    """Up to `size` parser processes; a worker that overruns the time budget is killed."""

    def __init__(
        self,
        size: int = 2,
        *,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        spool_root: Path | None = None,
    ) -> None:
        self.size = size
        self.memory_limit = memory_limit
        # Where each job gets its directory for big attachments (default: the system temp dir).
        self.spool_root = spool_root
        self._idle: list[_Worker] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    async def parse(self, raw: bytes, limits: ParseLimits) -> ParsedEmail:
        if self._closed:
            raise RuntimeError("the parser pool is closed")
        if len(raw) > limits.max_bytes:
            raise MailRejected(too_large(len(raw), limits))
        async with self._slots:
            spool_dir = Path(tempfile.mkdtemp(prefix="letterbox-parse-", dir=self.spool_root))
            try:
                status, value = await self._run(raw, limits, spool_dir)
                if status == "spooled" and isinstance(value, str):
                    status, value = await asyncio.to_thread(_load_result, Path(value), spool_dir)
                if status == "ok" and isinstance(value, ParsedEmail):
                    await asyncio.to_thread(_load_spooled, value, spool_dir)
            finally:
                shutil.rmtree(spool_dir, ignore_errors=True)
        if status == "ok" and isinstance(value, ParsedEmail):
            value.raw = raw
            return value
        if status == "rejected":
            raise MailRejected(str(value))
        log.warning("mail parser failed: %s", value)
        raise MailRejected("the message could not be parsed")

    async def _run(self, raw: bytes, limits: ParseLimits, spool_dir: Path) -> tuple[str, object]:
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
                return await self._run_on(reused, raw, limits, spool_dir)
            except _WorkerDied:
                log.warning("an idle mail parser worker had died; retrying with a new one")
        try:
            worker = await _Worker.start(self.memory_limit)
            return await self._run_on(worker, raw, limits, spool_dir)
        except _WorkerDied:
            # Out of memory, or the parser crashed the interpreter.
            raise MailRejected("the message could not be parsed") from None

    async def _run_on(
        self, worker: _Worker, raw: bytes, limits: ParseLimits, spool_dir: Path
    ) -> tuple[str, object]:
        keep = False
        try:
            try:
                async with asyncio.timeout(limits.time_budget_s):
                    result = await worker.run(raw, limits, spool_dir)
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
