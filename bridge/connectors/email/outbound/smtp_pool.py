"""The one SMTP session a login keeps open between mails.

Opening a session costs a TCP connect, STARTTLS and a login; a kept session costs only the
transaction. The session is opened at the first mail, reused by the next ones, and closed
(QUIT) after `idle_close_s` without a mail and by `close()` (logout, bridge stop).

A kept session can have died unnoticed (the server timed it out, restarted, answered 421).
A mail whose transaction then fails before the DATA command is sent at once on a new session:
the server cannot have taken it, so it never goes out twice. A failure from DATA on is the
caller's (the outbox retries it on its schedule). A session is also replaced when the account
changed (new password) or, for an OAuth login, when its access token was renewed.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
import logging

from ..idle_close import IdleClose
from ..sasl import BearerUnavailable
from .smtp_submit import (
    SmtpAccount,
    SmtpError,
    SmtpSession,
    SmtpTransient,
    SubmitResult,
    close_session,
    open_for,
    transaction,
)

log = logging.getLogger(__name__)


class SmtpPool:
    """One kept-alive SMTP session; `send` is serialised. `sessions_opened` counts logins."""

    def __init__(self, idle_close_s: float, name: str = "") -> None:
        self.name = name
        self.sessions_opened = 0
        self._session: SmtpSession | None = None
        self._account: SmtpAccount | None = None
        self._lock = asyncio.Lock()
        self._idle = IdleClose(idle_close_s, self._lock, self._drop, f"SMTP session of {name}")

    @property
    def is_open(self) -> bool:
        return self._session is not None and self._session.is_connected

    async def send(self, account: SmtpAccount, message: EmailMessage | bytes, *,
                   envelope_from: str, recipients: list[str]) -> SubmitResult:
        """Send one mail on the kept session (opened or replaced as needed); raises what
        `smtp_submit.submit` raises."""
        if not recipients:
            raise ValueError("at least one recipient is required")
        async with self._lock:
            self._idle.disarm()
            try:
                return await self._send(account, message, envelope_from, list(recipients))
            except BaseException as exc:
                if not isinstance(exc, SmtpError):  # cancelled mid-command: state unknown
                    self._abort()
                raise
            finally:
                if self._session is not None:
                    self._idle.arm()

    async def _send(self, account: SmtpAccount, message: EmailMessage | bytes,
                    envelope_from: str, recipients: list[str]) -> SubmitResult:
        session = await self._reusable(account)
        reused = session is not None
        if session is None:
            session = await self._open(account, recipients)
        try:
            return await transaction(session, message, envelope_from, recipients)
        except SmtpTransient as exc:
            if session.is_connected and exc.code != 421:
                raise  # the server refused this mail; the session itself is fine
            await self._drop()
            if not (reused and exc.before_data):
                raise
            log.info("The kept SMTP session of %s was gone (%s); sending on a new one",
                     self.name, exc)
        session = await self._open(account, recipients)
        try:
            return await transaction(session, message, envelope_from, recipients)
        except SmtpTransient:
            if not session.is_connected:
                await self._drop()
            raise

    async def _reusable(self, account: SmtpAccount) -> SmtpSession | None:
        session = self._session
        if session is None:
            return None
        fresh = session.is_connected and account == self._account
        if fresh and account.bearer is not None:
            try:
                fresh = await account.bearer.access_token() == session.bearer_token
            except BearerUnavailable:
                fresh = False  # opening a session reports it
        if not fresh:
            await self._drop()
            return None
        return session

    async def _open(self, account: SmtpAccount, recipients: list[str]) -> SmtpSession:
        session = await open_for(account, recipients)
        self._session, self._account = session, account
        self.sessions_opened += 1
        log.debug("Opened an SMTP session for %s (%d so far)", self.name, self.sessions_opened)
        return session

    def _abort(self) -> None:
        session, self._session, self._account = self._session, None, None
        if session is not None:
            session.close()

    async def _drop(self) -> None:
        session, self._session, self._account = self._session, None, None
        if session is not None:
            if session.is_connected:
                await close_session(session)
            else:
                session.close()

    async def close(self) -> None:
        """QUIT the kept session, if any (idempotent)."""
        await self._idle.cancel()
        async with self._lock:
            await self._drop()
