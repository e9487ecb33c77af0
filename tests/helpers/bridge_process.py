"""The bridge as a real operating-system process (`python -m bridge -c CONFIG`), for crash tests."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from bridge.__main__ import load_config
from bridge.connectors import load_connector
from devstack.ports import port_accepts

REPO = Path(__file__).resolve().parents[2]


class BridgeProcess:
    """Starts, kills and restarts one bridge process; its output goes to `log_file`."""

    def __init__(self, config: Path, log_file: Path) -> None:
        self.config = config
        self.log_file = log_file
        loaded = load_config(config, load_connector("email"))
        self.bot_mxid = f"@{loaded['appservice.bot_username']}:{loaded['homeserver.domain']}"
        self.port = int(loaded["appservice.port"])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the process; returns once its appservice port accepts connections."""
        assert self.process is None, "already running"
        deadline = time.monotonic() + 10
        while port_accepts(self.port):  # the previous process's socket must be gone
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} is still taken")
            time.sleep(0.05)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_file.open("ab") as log:
            log.write(f"---- start {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "-c", str(self.config)], cwd=REPO, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not port_accepts(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"the bridge exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"the bridge did not listen within {timeout}s:\n{self.tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: the bridge shuts down cleanly."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
