"""The test mails: one correspondent, a text + HTML alternative of everyday size, a marker."""

from __future__ import annotations

from email.message import EmailMessage
import re
import smtplib
import time

from devstack.matrix_client import Event
from devstack.stack import MailStack
from tests.helpers.email_e2e import mail

SENDER = "Robin Sender <robin@example.org>"
SENDER_ADDRESS = "robin@example.org"
_MARKER = re.compile(r"\bbench-(\w+)-(\d+)\b")

_PARAGRAPH = ("Thanks for the notes from Tuesday. I went through the list again and the open points "
              "are the venue, the budget for the catering and who collects the keys on Friday. ")


def marker(kind: str, i: int) -> str:
    return f"bench-{kind}-{i}"


def marker_of(event: Event) -> str | None:
    """The benchmark marker in a message event's body, or None."""
    if event.get("type") != "m.room.message":
        return None
    found = _MARKER.search(str(event.get("content", {}).get("body", "")))
    return found.group(0) if found else None


def bench_mail(to: str, kind: str, i: int) -> EmailMessage:
    """A ~3 KB mail (text + HTML) whose body carries `marker(kind, i)`."""
    tag = marker(kind, i)
    text = f"Hello,\n\n{_PARAGRAPH * 3}\n\n{tag}\n\nBest,\nRobin\n"
    html = (f"<html><body><p>Hello,</p><p>{_PARAGRAPH * 3}</p><p><b>{tag}</b></p>"
            "<p>Best,<br>Robin</p></body></html>")
    return mail(SENDER, [to], f"Planning note {kind} {i}", text, html=html)


def deliver_timed(stack: MailStack, msg: EmailMessage, to: str) -> float:
    """Send one mail through Postfix (own SMTP session); time.monotonic() when the send returned."""
    stack.deliver(msg.as_bytes(), [to], SENDER_ADDRESS)
    return time.monotonic()


def deliver_burst(stack: MailStack, msgs: list[EmailMessage], to: str) -> float:
    """Send all `msgs` in one SMTP session, back to back; returns the seconds it took."""
    started = time.monotonic()
    with smtplib.SMTP(stack.host, stack.smtp_port, timeout=30) as smtp:
        for msg in msgs:
            smtp.sendmail(SENDER_ADDRESS, [to], msg.as_bytes())
    return time.monotonic() - started
