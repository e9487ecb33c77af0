"""What Postfix's log says about the SMTP sessions of the submission port.

The rig's Postfix logs the client's port with its address (`smtpd_client_port_logging`), so the
session that carried a mail can be told from another: each accepted mail is logged with
`client=host[address]:port` and the SASL user name, each session ends with a
`disconnect from host[address]:port` line that lists the commands it received.
"""

from __future__ import annotations

from dataclasses import dataclass
import re

_MAIL = re.compile(
    r"postfix/submission/smtpd\[(?P<pid>\d+)\]: [0-9A-Za-z]+: client=\S*?\[[^\]]*\]:(?P<port>\d+),"
    r" sasl_method=\S+, sasl_username=(?P<user>\S+)")
_DISCONNECT = re.compile(
    r"postfix/submission/smtpd\[\d+\]: disconnect from \S*?\[[^\]]*\]:(?P<port>\d+) (?P<counts>.*)")


@dataclass(frozen=True, slots=True)
class Submission:
    """One mail the submission port accepted: the smtpd process and the client's port."""

    pid: int
    port: int


def submissions(log_text: str, username: str) -> list[Submission]:
    """The mails `username` submitted, in the order Postfix logged them."""
    return [Submission(int(m["pid"]), int(m["port"])) for m in _MAIL.finditer(log_text)
            if m["user"].lower() == username.lower()]


def disconnect_counts(log_text: str, port: int) -> dict[str, int] | None:
    """The command counts of the submission session from client `port` once it ended
    (e.g. {"ehlo": 2, "mail": 3, "quit": 1, "commands": 12}), None while it is open."""
    for m in _DISCONNECT.finditer(log_text):
        if int(m["port"]) == port:
            counts: dict[str, int] = {}
            for item in m["counts"].split():
                name, _, value = item.partition("=")
                done = value.split("/")[0]
                if done.isdigit():
                    counts[name] = int(done)
            return counts
    return None
