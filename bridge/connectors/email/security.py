"""How a connection to a mail server is secured: the one list of modes (IMAP, SMTP, login)."""

from __future__ import annotations

from typing import Literal, get_args

Security = Literal["tls", "starttls", "plain"]
# "tls": implicit TLS; "starttls": upgraded after the greeting; "plain": none (loopback only).
SECURITY_MODES: tuple[Security, ...] = get_args(Security)
SECURITY_MODES_TEXT = ", ".join(SECURITY_MODES)
