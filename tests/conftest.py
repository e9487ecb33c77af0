"""Session fixtures for the real loopback servers (logic lives in the `devstack` package).

Missing server binaries fail the fixture with a hint to run devstack/install.sh; nothing is skipped.
Set LETTERBOX_KEEP_STACK=1 to keep the servers' temp dirs (configs, logs) after the session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
import os
from pathlib import Path
import shutil
import tempfile
import uuid

from hypothesis import settings
import pytest

from bridge.core.bridge import Bridge
from devstack.dkim import DkimRig
from devstack.errors import MissingBinaryError
from devstack.matrix_client import MatrixTestClient
from devstack.postgres import PostgresServer, create_database, drop_database, ensure_postgres
from devstack.stack import MailStack, Synapse
from tests.helpers.harness import (
    EMAIL_RIG_OVERRIDES,
    LOOPBACK,
    LOOPBACK_APPSERVICE,
    BridgeSetup,
    start_bridge,
    stop_leftover_bridges,
)

# Property tests explore a fixed sequence of examples: a CI run is reproducible, and a failure
# found once is found again (the example database is off so nothing depends on local state).
settings.register_profile("letterbox", derandomize=True, database=None)
settings.load_profile("letterbox")

MAIL_USERS = {name: f"{name}pass" for name in ("alice", "bob", "carol", "dave")}


@contextmanager
def _stack_root(kind: str) -> Iterator[Path]:
    # not pytest's tmp_path: it lives under a 0700 dir the mail/postfix users cannot enter
    root = Path(tempfile.mkdtemp(prefix=f"letterbox-{kind}-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        if not os.environ.get("LETTERBOX_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _installed() -> Iterator[None]:
    try:
        yield
    except MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first: spread over the parallel workers (`-n`), they do not end up as one
    worker's tail while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(autouse=True)
async def _no_bridge_outlives_its_test() -> AsyncIterator[None]:
    """A test that fails before it stops its bridge would leave the session's appservice port
    taken, and every later bridge test would fail to start: stop what is still running."""
    yield
    await stop_leftover_bridges()


@pytest.fixture(autouse=True)
def _process_umask() -> Iterator[None]:
    """`bridge.__main__.main()` sets the process umask to 077 (its files are private); a test
    that runs it in-process must not leave that to the servers started after it (Dovecot's
    users file would be unreadable to its auth process)."""
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)


@pytest.fixture(scope="session")
def mail_stack() -> Iterator[MailStack]:
    """Dovecot + Postfix, users alice/bob/carol/dave @test.local, passwords `<name>pass`."""
    with _stack_root("mail") as root:
        with _installed():
            stack = MailStack(root, MAIL_USERS)
        with stack:
            yield stack


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The local PostgreSQL (127.0.0.1:5432) or a private cluster started for this session."""
    with _stack_root("pg") as root:
        with _installed():
            server = ensure_postgres(root)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """DSN of a fresh database for this session (dropped at the end)."""
    name = f"letterbox_test_{uuid.uuid4().hex[:12]}"
    yield create_database(postgres_server.dsn, name)
    drop_database(postgres_server.dsn, name)


SynapseFactory = Callable[[list[Path]], Synapse]


@pytest.fixture(scope="session")
def synapse_factory() -> Iterator[SynapseFactory]:
    """`start(registrations) -> Synapse`: starts Synapse once with those appservice
    registration files; a later call with a different list restarts it with the new list."""
    with _stack_root("synapse") as root:
        started: list[Synapse] = []

        def start(registrations: list[Path]) -> Synapse:
            if not started:
                with _installed():
                    started.append(Synapse(root, registrations=registrations,
                                           max_upload_size=TEST_MAX_UPLOAD_SIZE))
            synapse = started[0]
            if [Path(p).resolve() for p in registrations] != synapse.registrations:
                synapse.restart(registrations)
            else:
                synapse.start()
            return synapse

        try:
            yield start
        finally:
            for synapse in started:
                synapse.stop()


# ---------------------------------------------------------------- the bridge on a real homeserver

#: Synapse's upload limit in the test rig: low enough that a test mail can exceed it.
TEST_MAX_UPLOAD_SIZE = "10M"

TEST_PERMISSIONS = {"*": "relay", "localhost": "user", "@admin:localhost": "admin",
                    "@outsider:localhost": "relay"}


@pytest.fixture(scope="session")
def bridge_setups() -> Iterator[dict[str, BridgeSetup]]:
    """Config templates and registrations of the bridges under test (one appservice each)."""
    with _stack_root("bridge") as root:
        yield {
            "loopback": BridgeSetup.generate(root / "loopback", LOOPBACK, permissions=TEST_PERMISSIONS,
                                             overrides=LOOPBACK_APPSERVICE),
            # discovery asks DNS: only the discovery tests turn it on, with the rig's own server
            "email": BridgeSetup.generate(root / "email", "email", permissions=TEST_PERMISSIONS,
                                          overrides=EMAIL_RIG_OVERRIDES),
        }


@pytest.fixture(scope="session")
def synapse(synapse_factory: SynapseFactory, bridge_setups: dict[str, BridgeSetup]) -> Synapse:
    """Synapse, started once with the registrations of every bridge the tests run."""
    registrations = [s.registration for s in bridge_setups.values()]
    registrations += [s.double_puppet_registration for s in bridge_setups.values()
                      if s.double_puppet_registration is not None]
    return synapse_factory(registrations)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'bridge.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"letterbox_t_{uuid.uuid4().hex[:12]}"
    url = create_database(server.dsn, name)
    yield url
    drop_database(server.dsn, name)


@pytest.fixture
def bridge_config(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str,
                  tmp_path: Path) -> Path:
    """Config of a loopback bridge on a fresh database of each backend."""
    return bridge_setups["loopback"].config_for(tmp_path.name, hs_url=synapse.hs_url, db_url=db_url)


@pytest.fixture
async def bridge(bridge_config: Path) -> AsyncIterator[Bridge]:
    """A running loopback bridge (stopped after the test)."""
    b = await start_bridge(bridge_config)
    yield b
    await b.stop()


@pytest.fixture
async def matrix_user(synapse: Synapse) -> AsyncIterator[Callable[..., Awaitable[MatrixTestClient]]]:
    """`await matrix_user()` registers a fresh Matrix user and returns a client playing it."""
    clients: list[MatrixTestClient] = []

    async def make(prefix: str = "user") -> MatrixTestClient:
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        user_id, token = synapse.register_user(name, "pass-" + name)
        client = MatrixTestClient(synapse.hs_url, user_id, token)
        await client.sync_once()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def mailbox(mail_stack: MailStack) -> tuple[str, str]:
    """A fresh, empty mailbox on the running Dovecot/Postfix: (address, password)."""
    local = f"u{uuid.uuid4().hex[:10]}"
    password = f"pw-{local}"
    return mail_stack.add_user(local, password), password


@pytest.fixture(scope="session")
def dkim_rig() -> Iterator[DkimRig]:
    """Signs test mail for any domain; its loopback DNS server publishes the key."""
    rig = DkimRig()
    rig.start()
    yield rig
    rig.stop()


@pytest.fixture
def email_config(bridge_setups: dict[str, BridgeSetup], synapse: Synapse, db_url: str,
                 mail_stack: MailStack, dkim_rig: DkimRig, tmp_path: Path) -> Path:
    """Config of an email bridge on a fresh database, trusting the test mail servers' CA and
    looking DKIM keys up in the rig's DNS server."""
    return bridge_setups["email"].config_for(
        tmp_path.name, hs_url=synapse.hs_url, db_url=db_url,
        network={"ca_file": str(mail_stack.ca_file), "imap.poll_interval": 1,
                 "outbound.retry_schedule": [1, 2, 30],
                 "dns.nameserver": dkim_rig.address, "authenticity.dns_timeout": 2},
    )


@pytest.fixture
async def email_bridge(email_config: Path) -> AsyncIterator[Bridge]:
    """A running email bridge on `email_config` (stopped after the test)."""
    bridge = await start_bridge(email_config, connector_name="email")
    yield bridge
    await bridge.stop()
