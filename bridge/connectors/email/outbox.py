"""The durable outbox of one login: queued -> sending -> sent / failed, with retries.

A mail is stored whole (its exact bytes) before the Matrix event is acknowledged, so a restart
resumes without composing it again. The copy in the Sent folder is owed from the moment the mail
is marked sent (the same UPDATE) and is made once: after a restart it is made if still owed, and
skipped if a copy with the mail's Message-ID is already there.

The one window SMTP leaves open: a crash after the server has taken the mail (its 250 reply)
and before the row says so makes the mail go out again after the restart: the recipients get it
twice, with the same Message-ID (clients that collapse duplicates show it once). Temporary failures (4xx, timeouts, unreachable server) are
retried on the configured schedule; permanent ones (5xx) fail at once, per recipient where the
server says so. The room shows the outcome through the core's send-status reporting.

Only the SMTP transaction and the row's state are on the send path: mails go out on the login's
kept SMTP session (`SmtpPool`), and the next mail is submitted as soon as the row says `sent`.
The status event and receipt (`StatusQueue`) and the Sent-folder copy (`SentCopies`) follow in
order, each on its own task, once the outbox has no more mail ready to go (`quiet`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ...network import PortalID, PortalRef
from .db import OutboxRow, OutboxState, OutboxTable
from .db.outbox import RETRY_MARK
from .outbound.smtp_pool import SmtpPool
from .outbound.smtp_submit import SmtpAuthFailed, SmtpError, SmtpPermanent, SubmitResult
from .sent_copies import SentCopies
from .status_queue import StatusQueue

if TYPE_CHECKING:
    from .client import EmailClient

log = logging.getLogger("letterbox.email.outbox")


def _now_ms() -> int:
    return int(time.time() * 1000)


class Outbox:
    def __init__(self, client: EmailClient, table: OutboxTable) -> None:
        self.client = client
        self.table = table
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        idle_close_s = client.connector.config.idle_close_s
        self.smtp = SmtpPool(idle_close_s, client.address)
        # set while no mail is ready to go: the follow-ups of sent mail run then
        self.quiet = asyncio.Event()
        self.quiet.set()
        self.reports = StatusQueue(client.address, self.quiet)
        self.copies = SentCopies(client, table, self.quiet)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self.reports.start()
            self._task = asyncio.create_task(self._run(), name=f"outbox-{self.client.address}")

    async def stop(self) -> None:
        """Stop sending; queued reports go out first, owed copies wait for the next start,
        and the kept SMTP session is closed."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.quiet.set()
        await self.reports.stop()
        await self.copies.stop()
        await self.smtp.close()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        login_id = self.client.login.login_id
        while True:
            self._wake.clear()
            try:
                if not self.copies.running:
                    await self.copies.resume()
                held: set[str] = set()  # rooms whose older mail waits for a retry
                due = await self.table.due(login_id, _now_ms())
                if due:
                    self.quiet.clear()
                for row in due:
                    if row.portal_id in held:
                        continue
                    if not await self._send(row) and RETRY_MARK not in row.event_id:
                        held.add(row.portal_id)
                if not self._wake.is_set():  # no newer mail is waiting for the next round
                    self.quiet.set()
                next_due = await self.table.next_due_time(login_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.quiet.set()
                log.exception("Outbox of %s failed; retrying shortly", self.client.address)
                next_due = _now_ms() + 5000
            wait = 3600.0 if next_due is None else max(0.0, (next_due - _now_ms()) / 1000)
            # Not asyncio.wait_for: on 3.11 it swallows a cancellation that arrives just as the
            # event is set (a message queued while the login stops), and stop() would hang.
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _send(self, row: OutboxRow) -> bool:
        """Try one mail; False if it waits for a retry (later mail of its room waits too)."""
        portal = PortalRef(PortalID(row.portal_id), row.room_id, row.portal_id.startswith("dm:"))
        await self.table.set_state(row.event_id, OutboxState.SENDING)
        try:
            result = await self.smtp.send(self.client.smtp_account(), row.raw,
                                          envelope_from=self.client.address,
                                          recipients=row.recipients)
        except SmtpPermanent as e:
            await self._failed(row, portal, _server_reply(e))
            return True
        except SmtpError as e:
            return not await self._retry_later(row, portal, e, _server_reply(e))
        await self._sent(row, portal, result)
        return True

    async def _retry_later(self, row: OutboxRow, portal: PortalRef, exc: SmtpError, reply: str) -> bool:
        """Schedule the next attempt (True), or give up once the schedule is used up (False)."""
        schedule = self.client.connector.config.retry_schedule
        attempts = row.attempts + 1
        if attempts > len(schedule):
            await self._failed(row, portal, f"gave up after {attempts} attempts: {reply}")
            return False
        delay = schedule[attempts - 1]
        log.info("Mail %s for %s deferred (%s); attempt %d in %.0fs", row.message_id, row.recipients,
                 reply, attempts + 1, delay)
        await self.table.set_state(row.event_id, OutboxState.QUEUED, attempts=attempts,
                                   next_attempt=_now_ms() + int(delay * 1000), last_error=reply)
        if isinstance(exc, SmtpAuthFailed):
            await self.client.report_smtp_auth_failure(exc.reason)
        if attempts == 1:
            self.reports.post(lambda: self.client.bridge.report_send_status(
                portal, row.event_id, delivered=False, retrying=True,
                reason=f"Not sent yet, will retry: {reply}"))
        return True

    async def _failed(self, row: OutboxRow, portal: PortalRef, reply: str) -> None:
        log.warning("Mail %s failed permanently: %s", row.message_id, reply)
        await self.table.set_state(row.event_id, OutboxState.FAILED, last_error=reply)
        self.reports.post(lambda: self.client.bridge.report_send_status(
            portal, row.event_id, delivered=False, reason=reply))

    async def _sent(self, row: OutboxRow, portal: PortalRef, result: SubmitResult) -> None:
        # A retry for refused recipients is the same mail: its copy is the first send's.
        await self.table.mark_sent(row.event_id, attempts=row.attempts + 1,
                                   copy_to_sent=RETRY_MARK not in row.event_id)
        log.info("Mail %s accepted for %s", row.message_id, result.accepted)
        if result.permanent_refused:
            refused = "; ".join(f"{a}: {c} {t}" for a, (c, t) in result.permanent_refused.items())
            self.reports.post(lambda: self.client.bridge.notify_portal(
                self.client.login.login_id, portal, f"Not delivered to {refused}",
                reply_to_event=row.event_id))
        if result.transient_refused:
            retry = OutboxRow(
                event_id=f"{row.event_id}{RETRY_MARK}{row.attempts + 1}", login_id=row.login_id,
                portal_id=row.portal_id, room_id=row.room_id, message_id=row.message_id, raw=row.raw,
                recipients=list(result.transient_refused), attempts=1,
                next_attempt=_now_ms() + int(self.client.connector.config.retry_schedule[0] * 1000),
            )
            await self.table.insert(retry)
        self.reports.post(lambda: self.client.bridge.report_send_status(
            portal, row.event_id, delivered=True))
        if RETRY_MARK not in row.event_id:
            self.copies.owe(row)


def _server_reply(exc: SmtpError) -> str:
    if exc.code:
        return f"{exc.code} {exc.text}".strip()
    return exc.reason
