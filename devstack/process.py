"""Server processes: own session, PID file, SIGTERM then KILL, readiness polling."""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
import os
from pathlib import Path
import signal
import socket
import subprocess
import time

from .errors import ServerStartError
from .ports import LOOPBACK, port_accepts


def log_tail(paths: Sequence[Path], lines: int = 25) -> str:
    """The last `lines` lines of each existing log file, labelled by file name."""
    parts: list[str] = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        tail = "\n".join(text.splitlines()[-lines:])
        if tail:
            parts.append(f"[{path.name}]\n{tail}")
    return "\n".join(parts)


def _is_ours(pid: int, marker: str) -> bool:
    """Is `pid` a live (non-zombie) process whose cmdline or environment mentions `marker`?

    Guards against stale PID files whose PID got reused by an unrelated process.
    """
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        # the state letter follows the parenthesised command name
        if stat[stat.rindex(")") + 2] == "Z":
            return False
        blob = (proc / "cmdline").read_bytes() + b"\0" + (proc / "environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError, IndexError):
        return False
    return marker.encode() in blob


class ServerProcess:
    """One long-running server started with setsid, tracked by a PID file.

    `marker` is a string (usually a config path) that appears in the process's
    command line or environment; it identifies the process when only the PID file
    is left (e.g. for `python -m devstack down`).
    """

    def __init__(
        self,
        name: str,
        pid_file: Path,
        marker: str,
        logs: Sequence[Path] = (),
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.pid_file = pid_file
        self.marker = marker
        self.logs = list(logs)
        self.stop_signal = stop_signal
        self.popen: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self._pgid: int | None = None

    # ------------------------------------------------------------ start
    def spawn(
        self,
        argv: Sequence[str | os.PathLike[str]],
        stdout_log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        """Start `argv` in a new session, output appended to `stdout_log`."""
        stdout_log.parent.mkdir(parents=True, exist_ok=True)
        if stdout_log not in self.logs:
            self.logs.append(stdout_log)
        with open(stdout_log, "ab") as out:
            self.popen = subprocess.Popen(
                [os.fspath(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=env,
                cwd=cwd,
                user=user,
                group=user,
                extra_groups=[] if user else None,
            )
        self._pgid = self.popen.pid
        self.set_pid(self.popen.pid)

    def set_pid(self, pid: int) -> None:
        """Track `pid` as the server (e.g. a master started by a wrapper) and save it."""
        self.pid = pid
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{pid}\n")

    def load_pid(self) -> bool:
        """Adopt the PID from the PID file if that process is ours and alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return False
        try:
            pgid = os.getpgid(pid) if _is_ours(pid, self.marker) else None
        except ProcessLookupError:
            pgid = None
        if pgid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self.pid = pid
        self._pgid = pgid
        return True

    def running(self) -> bool:
        if self.pid is None:
            return False
        if self.popen is not None and self.popen.pid == self.pid:
            return self.popen.poll() is None
        return _is_ours(self.pid, self.marker)

    def exited_early(self) -> bool:
        """True when the spawned child is already gone (used while waiting for readiness)."""
        return self.popen is not None and self.popen.poll() is not None

    def fail(self, reason: str) -> ServerStartError:
        """A start error carrying the tail of this server's logs (caller raises it)."""
        return ServerStartError(self.name, reason, log_tail(self.logs))

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `check` until true; raise with the log tail on timeout or early exit."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            if self.exited_early():
                assert self.popen is not None
                raise self.fail(f"exited with code {self.popen.returncode} before {what}")
            if time.monotonic() > deadline:
                raise self.fail(f"no {what} after {timeout:.0f} s")
            time.sleep(0.02)

    # ------------------------------------------------------------ stop
    def signal_stop(self) -> None:
        """Send the stop signal (no waiting). Safe to call when not running.

        Without a tracked PID the PID file is consulted, so a fresh object can stop a
        server started by another process (the CLI's `down`).
        """
        if self.pid is None:
            self.load_pid()
        if self.pid is not None and self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, self.stop_signal)

    def wait_stopped(self, timeout: float = 10.0) -> None:
        """Wait for exit after signal_stop(); KILL the process group after `timeout`."""
        if self.pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.running():
            self._kill_group()
            end = time.monotonic() + 5
            while self.running() and time.monotonic() < end:
                time.sleep(0.02)
        if self.popen is not None:
            # reap the spawned child (may be a wrapper around the tracked PID)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.popen.wait(timeout=5)
        self.pid = None
        self.popen = None
        self.pid_file.unlink(missing_ok=True)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (idempotent)."""
        self.signal_stop()
        self.wait_stopped(timeout)

    def crash(self) -> None:
        """Kill the server and all its children at once (SIGKILL), like a crash or power loss."""
        self._kill_group()
        self.wait_stopped(timeout=5)

    def _kill_group(self) -> None:
        pgid = self._pgid
        if pgid is not None and pgid != os.getpgid(0):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def stop_all(procs: Sequence[ServerProcess], timeout: float = 10.0) -> None:
    """Signal every process first, then wait for each (servers shut down in parallel)."""
    for proc in procs:
        proc.signal_stop()
    for proc in procs:
        proc.wait_stopped(timeout)


def banner_check(port: int, prefix: bytes, host: str = LOOPBACK) -> Callable[[], bool]:
    """A readiness check: does host:port greet with a line starting with `prefix`?"""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5) as sock:
                sock.settimeout(2)
                return sock.recv(200).startswith(prefix)
        except OSError:
            return False

    return check


def ensure_ports_free(name: str, ports: Sequence[int]) -> None:
    """Raise ServerStartError if anything already listens on one of `ports`."""
    busy = [p for p in ports if port_accepts(p)]
    if busy:
        raise ServerStartError(name, f"port(s) already in use on {LOOPBACK}: {busy}")
