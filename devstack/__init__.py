"""Start-up code for the real loopback servers used by the tests and the demo.

Dovecot + Postfix (`MailStack`), Synapse (`Synapse`) and PostgreSQL (`ensure_postgres`),
all bound to 127.0.0.1, state under a caller-chosen root directory.
"""

from __future__ import annotations

from .errors import DevstackError, MatrixAdminError, MissingBinaryError, ServerStartError
from .mail import MailPorts
from .ports import free_port, free_ports
from .postgres import (
    PostgresServer,
    create_database,
    drop_database,
    ensure_database,
    ensure_postgres,
)
from .stack import MailStack, Synapse

__all__ = [
    "DevstackError",
    "MailPorts",
    "MailStack",
    "MatrixAdminError",
    "MissingBinaryError",
    "PostgresServer",
    "ServerStartError",
    "Synapse",
    "create_database",
    "drop_database",
    "ensure_database",
    "ensure_postgres",
    "free_port",
    "free_ports",
]
