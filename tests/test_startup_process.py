"""`python -m bridge` as a process: each start-up misconfiguration stops it with one line naming
the key (exit code 1, no traceback, no retry loop); SIGTERM stops it, also during start-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import signal
import socket
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from bridge.__main__ import example_for
from bridge.connectors import load_connector
from bridge.core.config import Config
from devstack.ports import free_port
from devstack.postgres import PostgresServer
from devstack.stack import Synapse
from tests.helpers.bridge_process import REPO
from tests.helpers.harness import BridgeSetup

pytestmark = pytest.mark.servers


@pytest.fixture
def make_config(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, tmp_path: Path) -> Any:
    """`make_config(**changes)`: the email bridge's config (registered with Synapse) with some
    keys changed (dotted keys with `__` for dots, e.g. appservice__as_token)."""
    def make(db_url: str | None = None, **changes: Any) -> Path:
        path = bridge_setups["email"].config_for(
            tmp_path.name, hs_url=synapse.hs_url, db_url=db_url or f"sqlite:{tmp_path / 'b.db'}")
        config = Config.load(path, example_for(load_connector("email")))
        for key, value in changes.items():
            config[key.replace("__", ".")] = value
        config.save()
        return path
    return make


def run_bridge(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", "-c", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def assert_one_line(result: subprocess.CompletedProcess[str], key: str, *words: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "retrying" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"config error: {key}: "), result.stderr
    for word in words:
        assert word in line, line
    return line


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on a free loopback port that never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def test_busy_port(make_config: Any, bridge_setups: dict[str, BridgeSetup]) -> None:
    config = make_config()
    with socket.socket() as taken:
        # SO_REUSEADDR: earlier tests' connections to this port may linger in TIME_WAIT; two
        # listening sockets on one port are still refused.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", bridge_setups["email"].as_port))
        taken.listen(1)
        assert_one_line(run_bridge(config), "appservice.port", "already in use")


def test_unreachable_homeserver(make_config: Any) -> None:
    config = make_config(homeserver__address=f"http://127.0.0.1:{free_port()}")
    assert_one_line(run_bridge(config), "homeserver.address", "cannot reach")


def test_rejected_as_token(make_config: Any) -> None:
    config = make_config(appservice__as_token="not-the-registered-token")
    assert_one_line(run_bridge(config), "appservice.as_token", "python -m bridge -g")


def test_hs_token_the_homeserver_does_not_use(make_config: Any) -> None:
    config = make_config(appservice__hs_token="not-the-registered-token")
    assert_one_line(run_bridge(config), "appservice.hs_token", "ping was refused")


def test_ghost_namespace_not_in_the_registration(make_config: Any) -> None:
    config = make_config(appservice__username_template="other_{userid}")
    assert_one_line(run_bridge(config), "appservice.username_template", "registration")


def test_registration_url_not_the_bridges(make_config: Any) -> None:
    config = make_config(appservice__port=free_port())
    assert_one_line(run_bridge(config), "appservice.address", "cannot reach the bridge")


def test_bad_log_level(make_config: Any) -> None:
    config = make_config(logging__level="LOUD")
    assert_one_line(run_bridge(config), "logging.level", "DEBUG")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_missing_database(make_config: Any, backend: str, tmp_path: Path,
                          request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = f"sqlite:{tmp_path / 'no-such-dir' / 'bridge.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = urlunsplit(urlsplit(server.dsn)._replace(path="/letterbox_no_such_db"))
    line = assert_one_line(run_bridge(make_config(db_url=url)), "database.url", "cannot")
    parts = urlsplit(url)
    assert parts.password is None or parts.password not in line


def test_sigterm_during_start_up_stops_at_once(make_config: Any, listener: socket.socket) -> None:
    # The "homeserver" accepts the connection and never answers: start-up hangs there.
    config = make_config(homeserver__address=f"http://127.0.0.1:{listener.getsockname()[1]}")
    process = subprocess.Popen([sys.executable, "-m", "bridge", "-c", str(config)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    try:
        listener.settimeout(60)
        conn, _ = listener.accept()  # the bridge is now waiting for the homeserver
        with conn:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Stopping during start-up" in stderr and "Traceback" not in stderr, stderr


def test_log_names_the_database_and_homeserver_and_sigterm_stops(
    make_config: Any, db_url: str, synapse: Synapse,
) -> None:
    config = make_config(db_url=db_url)
    process = subprocess.Popen([sys.executable, "-m", "bridge", "-c", str(config)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    lines: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "started" in line or "Traceback" in line:
                break
        process.send_signal(signal.SIGTERM)
        lines.append(process.communicate(timeout=30)[1] or "")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    log = "".join(lines)
    assert process.returncode == 0, log
    shown = urlsplit(db_url)
    expected_db = db_url if shown.password is None else db_url.replace(shown.password, "***")
    assert f"Database {expected_db}; homeserver {synapse.hs_url}" in log, log
    assert "Stopping" in log and "Traceback" not in log, log
