"""No secret at rest: a password typed to the bot never reaches a table, a log line or a file
others can read (a real login through Synapse, Dovecot and Postfix, on both backends)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
import stat
from typing import Any

import pytest

from bridge.__main__ import example_for
from bridge.connectors import load_connector
from bridge.core.config import Config
from devstack.bot_flows import email_login, management_room, wait_notice
from devstack.matrix_client import MatrixTestClient
from devstack.stack import MailStack
from tests.helpers.bridge_process import BridgeProcess
from tests.helpers.db_dump import dump_database, sqlite_files
from tests.helpers.email_e2e import servers

pytestmark = pytest.mark.servers

MakeUser = Callable[..., Awaitable[MatrixTestClient]]


def set_options(config: Path, options: dict[str, Any]) -> None:
    loaded = Config.load(config, example_for(load_connector("email")))
    for key, value in options.items():
        loaded[key] = value
    loaded.save()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def debug_bridge(email_config: Path, tmp_path: Path) -> BridgeProcess:
    """The email bridge as a real process, logging at DEBUG to a file of its own."""
    set_options(email_config, {"logging.level": "DEBUG", "logging.file": str(tmp_path / "letterbox.log")})
    return BridgeProcess(email_config, tmp_path / "stdout.log")


async def test_password_typed_to_the_bot_is_in_no_table_log_or_readable_file(
    debug_bridge: BridgeProcess, db_url: str, tmp_path: Path, mail_stack: MailStack,
    mailbox: tuple[str, str], matrix_user: MakeUser,
) -> None:
    address, password = mailbox
    user = await matrix_user()
    debug_bridge.start()
    try:
        room = await management_room(debug_bridge, user)
        await email_login(debug_bridge, user, room, address, password, **servers(mail_stack))
        # Inline form too, answering the password prompt again (same account, same user).
        await user.send_text(room, f"login address={address} password={password}")
        await wait_notice(user, room, debug_bridge.bot_mxid, "IMAP server", count=2)
        await user.send_text(room, "cancel")
        await wait_notice(user, room, debug_bridge.bot_mxid, "Login cancelled")
        dump = await dump_database(db_url)
        files = sqlite_files(db_url) if db_url.startswith("sqlite:") else []
        assert len(files) == (3 if files else 0), files  # the database, -wal and -shm
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        debug_bridge.stop()
    assert address.encode() in dump  # the dump does hold the login
    assert password.encode() not in dump
    logs = [tmp_path / "letterbox.log", tmp_path / "stdout.log"]
    for log in logs:
        text = log.read_text()
        assert " DEBUG " in text, log
        assert password not in text, log
    assert mode(logs[0]) == 0o600
