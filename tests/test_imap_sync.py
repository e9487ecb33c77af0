"""The IMAP login check and sync engine against the real Dovecot + Postfix (`mail_stack`).

The checkpoint store, mail sink and state listener are in-memory stand-ins for the bridge's
database and Matrix side. Every test empties the mailboxes it uses before and after.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
import imaplib
import logging
import subprocess
import time

import pytest

from bridge.connectors.email.imap import (
    Backfill,
    Backoff,
    Checkpoint,
    DeliveryRetry,
    FetchedMail,
    ImapAccount,
    ImapAuthFailed,
    ImapCertificateError,
    ImapConnectFailed,
    ImapSync,
    SyncState,
    check_login,
)
from bridge.connectors.email.imap import sync as sync_module
from bridge.connectors.email.imap.folder_sync import message_id_of
from devstack.ports import free_port
from devstack.stack import MailStack

# ---------------------------------------------------------------- test doubles


class MemoryCheckpoints:
    def __init__(self) -> None:
        self.data: dict[str, Checkpoint] = {}

    async def get(self, folder: str) -> Checkpoint | None:
        return self.data.get(folder)

    async def set(self, folder: str, checkpoint: Checkpoint) -> None:
        self.data[folder] = checkpoint


def mid_of(mail: FetchedMail) -> str:
    header_end = mail.raw.find(b"\r\n\r\n")
    found = message_id_of(mail.raw[: header_end + 4])
    assert found is not None
    return found


class MemorySink:
    """Records deliveries; `fail` maps a Message-ID to how many deliveries of it raise
    (-1: all). Each attempt records the folder checkpoint seen at that moment."""

    def __init__(self, checkpoints: MemoryCheckpoints) -> None:
        self.checkpoints = checkpoints
        self.mails: list[FetchedMail] = []
        self.known: set[str] = set()
        self.fail: dict[str, int] = {}
        self.failed_raises = False  # the give-up meets an outage
        self.failed_breaks = False  # the give-up fails for a reason of the mail's own
        self.given_up: list[tuple[str, str]] = []
        self.attempts: list[tuple[str, Checkpoint | None]] = []
        self.arrived_at: dict[str, float] = {}
        self.after_deliver: Callable[[str], Awaitable[None]] | None = None

    @property
    def ids(self) -> list[str]:
        return [mid_of(m) for m in self.mails]

    async def deliver(self, mail: FetchedMail) -> None:
        mid = mid_of(mail)
        self.attempts.append((mid, self.checkpoints.data.get(mail.folder)))
        left = self.fail.get(mid, 0)
        if left:
            self.fail[mid] = left - 1 if left > 0 else left
            raise RuntimeError(f"database unavailable while storing {mid}")
        self.mails.append(mail)
        self.known.add(mid)
        self.arrived_at[mid] = time.monotonic()
        if self.after_deliver is not None:
            await self.after_deliver(mid)

    async def failed(self, mail: FetchedMail, exc: BaseException) -> None:
        if self.failed_raises:
            raise ConnectionRefusedError("dead-letter table unavailable")
        if self.failed_breaks:
            raise ValueError(f"cannot describe {mid_of(mail)}")
        self.given_up.append((mid_of(mail), str(exc)))

    async def is_known(self, message_id: str) -> bool:
        return message_id in self.known


class SeenRecorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    async def seen_elsewhere(self, folder: str, uidvalidity: int, uids: list[int]) -> None:
        self.seen += [(folder, uid) for uid in uids]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[SyncState, str | None]] = []

    async def on_state(self, state: SyncState, reason: str | None) -> None:
        self.events.append((state, reason))

    @property
    def states(self) -> list[SyncState]:
        return [s for s, _ in self.events]


# ---------------------------------------------------------------- helpers


def make_mail(mid: str, subject: str = "test", sender: str = "carol@test.local") -> bytes:
    return (
        f"From: {sender}\r\nTo: someone@test.local\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\nDate: Wed, 26 Nov 2025 10:00:00 +0000\r\n\r\n"
        f"Body of {subject}.\r\n"
    ).encode()


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def _wait_visible(stack: MailStack, user: str, mid: str, folder: str = "INBOX") -> None:
    client = stack.imap_client(user)
    try:
        deadline = time.monotonic() + 10
        while True:
            client.select(folder, readonly=True)
            _, data = client.search(None, "HEADER", "Message-ID", f'"{mid}"')
            if data[0].split():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{mid} never reached {user}'s {folder}")
            time.sleep(0.01)
    finally:
        client.logout()


class Harness:
    """Accounts with emptied mailboxes, engines stopped at teardown, mail delivery helpers."""

    def __init__(self, stack: MailStack) -> None:
        self.stack = stack
        self.users: set[str] = set()
        self.engines: list[ImapSync] = []

    async def account(self, user: str, *, security: str = "starttls", **kw: object) -> ImapAccount:
        if user not in self.users:
            await asyncio.to_thread(self.stack.empty_mailbox, user)
            self.users.add(user)
        port = {"tls": self.stack.imaps_port}.get(security, self.stack.imap_port)
        settings: dict[str, object] = {
            "host": self.stack.host,
            "port": port,
            "security": security,
            "username": self.stack.address(user),
            "password": self.stack.password(user),
            "ca_file": str(self.stack.ca_file),
            "timeout": 5.0,
        }
        settings.update(kw)
        return ImapAccount(**settings)  # type: ignore[arg-type]

    def engine(
        self, account: ImapAccount, **kw: object
    ) -> tuple[ImapSync, MemorySink, MemoryCheckpoints, Recorder]:
        checkpoints = MemoryCheckpoints()
        sink = MemorySink(checkpoints)
        recorder = Recorder()
        options: dict[str, object] = {
            "backfill": Backfill(max_age_days=30, max_messages=50),
            "idle_renew_s": 25 * 60,
            "poll_interval_s": 60.0,
            "backoff": Backoff(initial_s=0.05, max_s=0.5),
            "delivery_retry": DeliveryRetry(attempts=3, initial_delay_s=0.05),
        }
        options.update(kw)
        sync = ImapSync(
            account, sink=sink, checkpoints=checkpoints, listener=recorder, **options  # type: ignore[arg-type]
        )
        self.engines.append(sync)
        return sync, sink, checkpoints, recorder

    async def smtp(self, user: str, raw: bytes, *, wait: bool = True) -> None:
        await asyncio.to_thread(self.stack.deliver, raw, [user], "carol@test.local")
        if wait:
            mid = message_id_of(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
            assert mid is not None
            await asyncio.to_thread(_wait_visible, self.stack, user, mid)

    async def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        *,
        date: datetime | None = None,
        create: bool = False,
    ) -> None:
        def work() -> None:
            client = self.stack.imap_client(user)
            try:
                if create:
                    client.create(f'"{folder}"')
                when = imaplib.Time2Internaldate(date) if date else None
                typ, data = client.append(f'"{folder}"', "", when, raw)
                assert typ == "OK", data
            finally:
                client.logout()

        await asyncio.to_thread(work)

    async def close(self) -> None:
        for engine in self.engines:
            await engine.stop()
        for user in self.users:
            await asyncio.to_thread(self.stack.empty_mailbox, user)


@pytest.fixture
async def harness(mail_stack: MailStack) -> AsyncIterator[Harness]:
    h = Harness(mail_stack)
    try:
        yield h
    finally:
        await h.close()


# ---------------------------------------------------------------- login check


async def test_check_login_succeeds_over_starttls_tls_and_loopback_plain(harness: Harness) -> None:
    for security in ("starttls", "tls", "plain"):
        await check_login(await harness.account("alice", security=security))


async def test_check_login_wrong_password(harness: Harness) -> None:
    account = await harness.account("alice", password="not-alices-password")
    with pytest.raises(ImapAuthFailed) as info:
        await check_login(account)
    assert "rejected the username or password" in info.value.reason
    assert "not-alices-password" not in info.value.reason


async def test_password_is_never_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    secret = 'Pa"ss\\wörd-Zq9'
    account = await harness.account("alice", password=secret)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ImapAuthFailed) as info:
        await check_login(account)
    token = base64.b64encode(f"\0{account.username}\0{secret}".encode()).decode()
    seen = caplog.text + repr(account) + info.value.reason + repr(info.value)
    assert "AUTHENTICATE PLAIN" in caplog.text  # the command itself was logged (scrubbed)
    assert secret not in seen and "Zq9" not in seen and token not in seen


async def test_check_login_nothing_listening(harness: Harness) -> None:
    account = await harness.account("alice", port=free_port())
    with pytest.raises(ImapConnectFailed) as info:
        await check_login(account)
    assert "refused" in info.value.reason


async def test_check_login_rejects_untrusted_certificate(harness: Harness) -> None:
    # no CA file: the system trust store does not know the stack's self-signed CA
    for security in ("tls", "starttls"):
        account = await harness.account("alice", security=security, ca_file=None)
        with pytest.raises(ImapCertificateError) as info:
            await check_login(account)
        assert "could not be verified" in info.value.reason


async def test_engine_reports_bad_credentials_and_stops_retrying(harness: Harness) -> None:
    account = await harness.account("alice", password="wrong")
    sync, _, _, recorder = harness.engine(account)
    await sync.start()
    await wait_until(lambda: not sync.running, 5, "the engine to give up")
    assert recorder.states == [SyncState.CONNECTING, SyncState.BAD_CREDENTIALS]
    assert "rejected" in (recorder.events[-1][1] or "")
    await sync.start()  # an explicit start tries again
    await wait_until(lambda: not sync.running, 5, "the engine to give up again")
    assert recorder.states[2:] == [SyncState.CONNECTING, SyncState.BAD_CREDENTIALS]


# ---------------------------------------------------------------- sync


async def test_backfill_delivers_newest_n_oldest_first_without_marking_seen(
    harness: Harness,
) -> None:
    account = await harness.account("bob")
    old = datetime.now(UTC) - timedelta(days=40)
    await harness.append("bob", "INBOX", make_mail("<old@x>"), date=old)
    for i in range(5):
        await harness.append("bob", "INBOX", make_mail(f"<b{i}@x>"))
    sync, sink, checkpoints, _ = harness.engine(
        account, backfill=Backfill(max_age_days=30, max_messages=3)
    )
    await sync.run_once()
    assert sink.ids == ["<b2@x>", "<b3@x>", "<b4@x>"]
    assert all(m.backfill and m.folder == "INBOX" for m in sink.mails)
    uids = [m.uid for m in sink.mails]
    assert uids == sorted(uids)
    assert checkpoints.data["INBOX"] == Checkpoint(sink.mails[0].uidvalidity, uids[-1])
    assert all("\\Seen" not in m.flags for m in sink.mails)

    # an old message inside the count but outside the age window is not delivered
    account2 = await harness.account("bob")
    sync2, sink2, _, _ = harness.engine(
        account2, backfill=Backfill(max_age_days=30, max_messages=10)
    )
    await sync2.run_once()
    assert sink2.ids == [f"<b{i}@x>" for i in range(5)]

    # nothing was marked \Seen by fetching
    client = harness.stack.imap_client("bob")
    try:
        client.select("INBOX", readonly=True)
        _, seen = client.search(None, "SEEN")
    finally:
        client.logout()
    assert seen == [b""]


async def test_first_sync_without_backfill_starts_from_now(harness: Harness) -> None:
    account = await harness.account("bob")
    await harness.append("bob", "INBOX", make_mail("<before@x>"))
    sync, sink, checkpoints, _ = harness.engine(account, backfill=Backfill(max_age_days=None, max_messages=0))
    await sync.run_once()
    assert sink.mails == [] and checkpoints.data["INBOX"].last_uid > 0
    await harness.append("bob", "INBOX", make_mail("<after@x>"))
    await sync.run_once()
    assert sink.ids == ["<after@x>"] and not sink.mails[0].backfill


def assert_stopped_by_itself(sync: ImapSync, caplog: pytest.LogCaptureFixture) -> None:
    """The engine ended on its own (left IDLE or its poll wait), not cancelled after the grace."""
    assert not sync.running
    assert [r.getMessage() for r in caplog.records if "cancelling" in r.getMessage()] == []


async def test_mail_arrives_via_idle_within_two_seconds(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    account = await harness.account("carol")
    sync, sink, checkpoints, recorder = harness.engine(account)
    await sync.start()
    await wait_until(lambda: "INBOX" in checkpoints.data, 5, "the first sync")
    await asyncio.sleep(0.1)  # let the engine enter IDLE
    latencies = []
    for i in range(2):
        mid = f"<idle{i}@x>"
        await harness.smtp("carol", make_mail(mid), wait=False)
        sent = time.monotonic()
        await wait_until(lambda mid=mid: mid in sink.arrived_at, 2.0, f"{mid} via IDLE")
        latencies.append(sink.arrived_at[mid] - sent)
    assert sink.ids == ["<idle0@x>", "<idle1@x>"]
    assert not any(m.backfill for m in sink.mails)
    assert recorder.states == [SyncState.CONNECTING, SyncState.CONNECTED]
    print(f"IDLE latencies: {[round(x, 3) for x in latencies]}")
    with caplog.at_level(logging.INFO, logger=sync_module.log.name):
        await sync.stop()
        await sync.stop()  # idempotent
    assert_stopped_by_itself(sync, caplog)


async def test_mail_arriving_while_stopped_is_caught_up_once_in_order(harness: Harness) -> None:
    account = await harness.account("dave", security="tls")
    sync, sink, checkpoints, recorder = harness.engine(account)
    await sync.start()
    await wait_until(lambda: "INBOX" in checkpoints.data, 5, "the first sync")
    await sync.stop()
    sent = [f"<down{i}@x>" for i in range(5)]
    for mid in sent:
        await harness.smtp("dave", make_mail(mid))
    await sync.start()
    await wait_until(lambda: len(sink.mails) >= 5, 5, "the caught-up mail")
    assert recorder.states[-1] == SyncState.CONNECTED
    await sync.stop()  # a stopped engine delivers nothing more: what it sent is all it sends
    assert sink.ids == sent
    uids = [m.uid for m in sink.mails]
    assert uids == sorted(uids) and not any(m.backfill for m in sink.mails)
    assert checkpoints.data["INBOX"].last_uid == uids[-1]


async def test_checkpoint_advances_only_after_delivery_and_failures_are_retried(
    harness: Harness,
) -> None:
    account = await harness.account("dave")
    sync, sink, checkpoints, _ = harness.engine(account, backfill=Backfill(max_age_days=None, max_messages=0))
    await sync.run_once()
    start = checkpoints.data["INBOX"].last_uid
    for i in range(3):
        await harness.append("dave", "INBOX", make_mail(f"<r{i}@x>"))
    sink.fail["<r1@x>"] = 2  # fails twice, the third attempt succeeds
    await sync.run_once()
    assert sink.ids == ["<r0@x>", "<r1@x>", "<r2@x>"]
    uids = [m.uid for m in sink.mails]
    # while <r1> was failing the checkpoint stayed at <r0>
    assert [cp.last_uid for mid, cp in sink.attempts if mid == "<r1@x>" and cp] == [uids[0]] * 3
    assert sink.attempts[0][1] == Checkpoint(sink.mails[0].uidvalidity, start)
    assert checkpoints.data["INBOX"].last_uid == uids[2]
    assert sink.given_up == []


async def test_poison_mail_is_reported_after_retries_and_does_not_block(harness: Harness) -> None:
    account = await harness.account("dave")
    sync, sink, checkpoints, _ = harness.engine(account, backfill=Backfill(max_age_days=None, max_messages=0))
    await sync.run_once()
    for i in range(3):
        await harness.append("dave", "INBOX", make_mail(f"<p{i}@x>"))
    sink.fail["<p1@x>"] = -1
    sink.failed_raises = True  # the give-up cannot be recorded: the mail must not be skipped
    with pytest.raises(ConnectionRefusedError, match="dead-letter"):
        await sync.run_once()
    assert sink.ids == ["<p0@x>"]
    assert checkpoints.data["INBOX"].last_uid == sink.mails[0].uid

    sink.failed_raises = False
    await sync.run_once()
    assert sink.ids == ["<p0@x>", "<p2@x>"]
    assert [mid for mid, _ in sink.given_up] == ["<p1@x>"]
    assert "database unavailable" in sink.given_up[0][1]
    assert checkpoints.data["INBOX"].last_uid == sink.mails[-1].uid

    sink.fail.clear()
    await sync.run_once()  # nothing is replayed
    assert sink.ids == ["<p0@x>", "<p2@x>"]


async def test_mail_whose_failure_cannot_be_described_does_not_stall_the_folder(
    harness: Harness,
) -> None:
    account = await harness.account("dave")
    sync, sink, checkpoints, _ = harness.engine(account, backfill=Backfill(max_age_days=None, max_messages=0))
    await sync.run_once()
    for i in range(3):
        await harness.append("dave", "INBOX", make_mail(f"<q{i}@x>"))
    sink.fail["<q1@x>"] = -1
    sink.failed_breaks = True
    await sync.run_once()
    assert sink.ids == ["<q0@x>", "<q2@x>"]
    assert checkpoints.data["INBOX"].last_uid == sink.mails[-1].uid


async def test_outage_during_delivery_is_not_counted_against_the_mail(harness: Harness) -> None:
    account = await harness.account("dave")
    sync, sink, checkpoints, _ = harness.engine(account, backfill=Backfill(max_age_days=None, max_messages=0))
    await sync.run_once()
    await harness.append("dave", "INBOX", make_mail("<o1@x>"))
    real_deliver = sink.deliver
    outages = 0

    async def unreachable(mail: FetchedMail) -> None:
        nonlocal outages
        outages += 1
        raise ConnectionRefusedError("homeserver unreachable")

    sink.deliver = unreachable  # type: ignore[method-assign]
    with pytest.raises(ConnectionRefusedError):
        await sync.run_once()
    assert outages == 1 and sink.given_up == []  # held at once, not retried as the mail's fault
    sink.deliver = real_deliver  # type: ignore[method-assign]
    await sync.run_once()
    assert sink.ids == ["<o1@x>"] and sink.given_up == []
    assert checkpoints.data["INBOX"].last_uid == sink.mails[-1].uid


async def test_uidvalidity_change_delivers_only_unknown_message_ids(harness: Harness) -> None:
    account = await harness.account("bob")
    await harness.append("bob", "Lists", make_mail("<k1@x>"), create=True)
    await harness.append("bob", "Lists", make_mail("<k2@x>"))
    sync, sink, checkpoints, _ = harness.engine(
        account, folders=["Lists"], backfill=Backfill(max_age_days=30, max_messages=50)
    )
    await sync.run_once()
    assert sink.ids == ["<k1@x>", "<k2@x>"]
    before = checkpoints.data["Lists"]

    def recreate() -> None:
        client = harness.stack.imap_client("bob")
        try:
            assert client.delete("Lists")[0] == "OK"
            assert client.create("Lists")[0] == "OK"
        finally:
            client.logout()

    await asyncio.to_thread(recreate)
    old = datetime.now(UTC) - timedelta(days=60)
    await harness.append("bob", "Lists", make_mail("<ancient@x>"), date=old)
    for mid in ("<k1@x>", "<new1@x>", "<k2@x>", "<new2@x>"):
        await harness.append("bob", "Lists", make_mail(mid))
    await sync.run_once()
    after = checkpoints.data["Lists"]
    assert after.uidvalidity != before.uidvalidity
    assert sink.ids == ["<k1@x>", "<k2@x>", "<new1@x>", "<new2@x>"]
    assert after.last_uid == 5 and all(m.uidvalidity == after.uidvalidity for m in sink.mails[2:])
    await sync.run_once()  # steady state again: nothing replayed
    assert len(sink.mails) == 4


async def test_uidvalidity_change_loses_no_mail_beyond_the_backfill_count(harness: Harness) -> None:
    account = await harness.account("bob")
    await harness.append("bob", "Lists", make_mail("<m0@x>"), create=True)
    await harness.append("bob", "Lists", make_mail("<m1@x>"))
    sync, sink, checkpoints, _ = harness.engine(
        account, folders=["Lists"], backfill=Backfill(max_age_days=30, max_messages=3)
    )
    await sync.run_once()
    assert sink.ids == ["<m0@x>", "<m1@x>"]

    def recreate() -> None:
        client = harness.stack.imap_client("bob")
        try:
            assert client.delete("Lists")[0] == "OK"
            assert client.create("Lists")[0] == "OK"
        finally:
            client.logout()

    await asyncio.to_thread(recreate)
    await harness.append("bob", "Lists", make_mail("<m0@x>"))
    await harness.append("bob", "Lists", make_mail("<m1@x>"))
    arrived = [f"<while-away{i}@x>" for i in range(8)]
    for mid in arrived:
        await harness.append("bob", "Lists", make_mail(mid))
    await sync.run_once()
    assert sink.ids == ["<m0@x>", "<m1@x>", *arrived]
    assert checkpoints.data["Lists"].last_uid == 10


async def test_server_kick_reconnects_and_loses_nothing(harness: Harness) -> None:
    account = await harness.account("carol")
    sync, sink, checkpoints, recorder = harness.engine(account)
    await sync.start()
    await wait_until(lambda: "INBOX" in checkpoints.data, 5, "the first sync")
    await harness.smtp("carol", make_mail("<pre@x>"), wait=False)
    await wait_until(lambda: len(sink.mails) == 1, 3, "the first mail")

    res = await asyncio.to_thread(
        subprocess.run,
        ["doveadm", "-c", str(harness.stack.dovecot.config), "kick", account.username],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    await harness.smtp("carol", make_mail("<during@x>"), wait=False)
    await wait_until(
        lambda: recorder.states.count(SyncState.CONNECTED) == 2, 5, "the reconnect"
    )
    await harness.smtp("carol", make_mail("<post@x>"), wait=False)
    await wait_until(lambda: len(sink.mails) == 3, 3, "all mail")
    assert sink.ids == ["<pre@x>", "<during@x>", "<post@x>"]
    assert recorder.states == [
        SyncState.CONNECTING,
        SyncState.CONNECTED,
        SyncState.TRANSIENT_DISCONNECT,
        SyncState.CONNECTED,
    ]
    assert "closing" in (recorder.events[2][1] or "")


class TcpProxy:
    """Forwards a loopback port to the IMAP server; can cut every connection and refuse new ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except ConnectionError:
            pass
        finally:
            dst.transport.abort()

    async def cut_and_refuse(self) -> None:
        """Stop listening and reset every forwarded connection (no IMAP BYE, just RST)."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        await self.cut_and_refuse()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


async def test_abrupt_connection_loss_and_refused_reconnects_lose_nothing(
    harness: Harness,
) -> None:
    proxy = TcpProxy(harness.stack.imap_port)
    await proxy.open()
    try:
        account = await harness.account("alice", port=proxy.port)
        sync, sink, checkpoints, recorder = harness.engine(account)
        await sync.start()
        await wait_until(lambda: SyncState.CONNECTED in recorder.states, 5, "CONNECTED")
        await wait_until(lambda: "INBOX" in checkpoints.data, 5, "the first sync")
        await asyncio.sleep(0.1)
        await proxy.cut_and_refuse()
        await harness.smtp("alice", make_mail("<while-down@x>"))
        await wait_until(
            lambda: any("refused" in (r or "") for _, r in recorder.events), 3, "a refused retry"
        )
        await proxy.open()
        await wait_until(lambda: len(sink.mails) == 1, 5, "the mail after reconnecting")
        assert sink.ids == ["<while-down@x>"]
        states = recorder.states
        assert states[:3] == [
            SyncState.CONNECTING,
            SyncState.CONNECTED,
            SyncState.TRANSIENT_DISCONNECT,
        ]
        assert states[-1] == SyncState.CONNECTED
        await sync.stop()
    finally:
        await proxy.close()


async def test_reconnects_within_seconds_after_a_long_outage(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed connection attempts back off to a short cap, whatever the session back-off."""
    proxy = TcpProxy(harness.stack.imap_port)
    await proxy.open()
    try:
        account = await harness.account("alice", port=proxy.port)
        sync, _, _, recorder = harness.engine(account, backoff=Backoff(initial_s=1.0, max_s=300.0))
        opens = 0
        real_open = sync_module.ImapConnection.open

        async def counting_open(account: ImapAccount) -> object:
            nonlocal opens
            opens += 1
            return await real_open(account)

        monkeypatch.setattr(sync_module.ImapConnection, "open", counting_open)
        await sync.start()
        await wait_until(lambda: SyncState.CONNECTED in recorder.states, 5, "CONNECTED")
        await proxy.cut_and_refuse()
        await wait_until(lambda: opens >= 6, 40, "five refused connection attempts")
        await proxy.open()
        connected_before = recorder.states.count(SyncState.CONNECTED)
        await wait_until(lambda: recorder.states.count(SyncState.CONNECTED) > connected_before, 10,
                         "the reconnect once the server is back")
        await sync.stop()
    finally:
        await proxy.close()


async def test_secondary_folder_is_polled_while_inbox_idles(harness: Harness) -> None:
    account = await harness.account("alice")
    await harness.append("alice", "Lists", make_mail("<l0@x>"), create=True)
    sync, sink, checkpoints, _ = harness.engine(
        account, folders=["INBOX", "Lists"], poll_interval_s=0.3, use_notify=False,
        backfill=Backfill(max_age_days=None, max_messages=0)
    )
    await sync.start()
    await wait_until(lambda: len(checkpoints.data) == 2, 5, "the first sync of both folders")
    await harness.append("alice", "Lists", make_mail("<l1@x>"))
    await harness.smtp("alice", make_mail("<i1@x>"), wait=False)
    await wait_until(lambda: len(sink.mails) == 2, 3, "mail from both folders")
    assert {(m.folder, mid_of(m)) for m in sink.mails} == {("Lists", "<l1@x>"), ("INBOX", "<i1@x>")}


async def test_mail_arriving_during_a_catch_up_is_not_stranded(harness: Harness) -> None:
    """<late> arrives while <a0> is being delivered; Dovecot announces it (EXISTS) during the
    next FETCH, which aioimaplib does not pass on, and does not announce it again at IDLE.
    It must still arrive promptly, not at the next IDLE renewal (25 min)."""
    account = await harness.account("dave")
    sync, sink, checkpoints, _ = harness.engine(account, batch_size=1)
    await sync.start()
    await wait_until(lambda: "INBOX" in checkpoints.data, 5, "the first sync")
    await sync.stop()
    for mid in ("<a0@x>", "<a1@x>"):
        await harness.smtp("dave", make_mail(mid))

    async def inject(mid: str) -> None:
        if mid == "<a0@x>":
            await harness.smtp("dave", make_mail("<late@x>"))

    sink.after_deliver = inject
    await sync.start()
    # Within seconds, where a stranded mail would wait for the IDLE renewal (25 min).
    await wait_until(lambda: "<late@x>" in sink.arrived_at, 5, "<late@x>")
    assert sink.ids == ["<a0@x>", "<a1@x>", "<late@x>"]


async def test_polling_without_idle_picks_up_new_mail(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    account = await harness.account("bob", security="tls")
    sync, sink, checkpoints, recorder = harness.engine(account, use_idle=False, poll_interval_s=0.2)
    await sync.start()
    await wait_until(lambda: "INBOX" in checkpoints.data, 5, "the first sync")
    await harness.smtp("bob", make_mail("<polled@x>"), wait=False)
    await wait_until(lambda: len(sink.mails) == 1, 2, "the polled mail")
    assert sink.ids == ["<polled@x>"] and recorder.states[-1] == SyncState.CONNECTED
    with caplog.at_level(logging.INFO, logger=sync_module.log.name):
        await sync.stop()
    assert_stopped_by_itself(sync, caplog)


async def test_other_folders_are_announced_by_notify_without_polling(harness: Harness) -> None:
    """With NOTIFY, a mail put into a second folder by another client arrives within seconds
    although the poll interval is an hour."""
    account = await harness.account("alice")
    await harness.append("alice", "Lists", make_mail("<n0@x>"), create=True)
    sync, sink, checkpoints, _ = harness.engine(
        account, folders=["INBOX", "Lists"], poll_interval_s=3600,
        backfill=Backfill(max_age_days=None, max_messages=0),
    )
    await sync.start()
    await wait_until(lambda: len(checkpoints.data) == 2, 5, "the first sync of both folders")
    await harness.append("alice", "Lists", make_mail("<n1@x>"))
    await wait_until(lambda: len(sink.mails) == 1, 5, "the mail announced by NOTIFY")
    await harness.smtp("alice", make_mail("<n2@x>"), wait=False)
    await wait_until(lambda: len(sink.mails) == 2, 5, "the INBOX mail announced by NOTIFY")
    assert [(m.folder, mid_of(m)) for m in sink.mails] == [("Lists", "<n1@x>"), ("INBOX", "<n2@x>")]


async def test_sent_folder_is_found_on_the_sync_session(harness: Harness) -> None:
    account = await harness.account("bob")
    found: list[tuple[str, str | None]] = []
    sync, sink, checkpoints, _ = harness.engine(
        account, special_folders=("\\Sent",), on_special=lambda flag, folder: found.append((flag, folder)),
        poll_interval_s=3600, backfill=Backfill(max_age_days=None, max_messages=0),
    )
    await sync.start()
    await wait_until(lambda: len(checkpoints.data) == 2, 5, "the first sync of INBOX and Sent")
    assert found == [("\\Sent", "Sent")]
    await harness.append("bob", "Sent", make_mail("<mine@x>", sender="bob@test.local"))
    await wait_until(lambda: len(sink.mails) == 1, 5, "the mail in Sent")
    assert sink.mails[0].folder == "Sent"


async def test_seen_set_by_another_client_is_reported(harness: Harness) -> None:
    account = await harness.account("carol")
    seen = SeenRecorder()
    sync, sink, checkpoints, _ = harness.engine(account, seen=seen)
    await sync.start()
    await wait_until(lambda: "INBOX" in checkpoints.data, 5, "the first sync")
    await harness.smtp("carol", make_mail("<s0@x>"), wait=False)
    await harness.smtp("carol", make_mail("<s1@x>"), wait=False)
    await wait_until(lambda: len(sink.mails) == 2, 5, "both mails")
    uid = sink.mails[1].uid

    def mark_seen() -> None:
        client = harness.stack.imap_client("carol")
        try:
            client.select("INBOX")
            typ, data = client.uid("STORE", str(uid), "+FLAGS", "(\\Seen)")
            assert typ == "OK", data
        finally:
            client.logout()

    await asyncio.to_thread(mark_seen)
    await wait_until(lambda: bool(seen.seen), 5, "the flag change")
    assert seen.seen == [("INBOX", uid)]


async def test_seen_is_reported_in_the_idle_fallback_too(harness: Harness) -> None:
    account = await harness.account("dave")
    seen = SeenRecorder()
    sync, sink, checkpoints, _ = harness.engine(account, seen=seen, use_notify=False)
    await sync.start()
    await wait_until(lambda: "INBOX" in checkpoints.data, 5, "the first sync")
    await harness.smtp("dave", make_mail("<f0@x>"), wait=False)
    await wait_until(lambda: len(sink.mails) == 1, 5, "the mail")

    def mark_seen() -> None:
        client = harness.stack.imap_client("dave")
        try:
            client.select("INBOX")
            client.uid("STORE", str(sink.mails[0].uid), "+FLAGS", "(\\Seen)")
        finally:
            client.logout()

    await asyncio.to_thread(mark_seen)
    await wait_until(lambda: bool(seen.seen), 5, "the flag change seen in IDLE")
    assert seen.seen == [("INBOX", sink.mails[0].uid)]
