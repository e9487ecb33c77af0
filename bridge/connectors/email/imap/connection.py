"""One IMAP session on top of aioimaplib, with typed errors and connection-loss detection.

aioimaplib leaves a pending command waiting forever when the socket dies, so every command
here races against the connection-lost callback. The session is single use: after any error
it is marked broken and the owner must close it and open a new one.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
import logging
import socket
import ssl
from typing import Any, TypeVar

import aioimaplib

from ..sasl import BearerUnavailable, choose_mechanism, failure_reply, initial_response
from .account import ImapAccount
from .changes import Changes
from .errors import (
    ImapAuthFailed,
    ImapCertificateError,
    ImapConfigError,
    ImapConnectFailed,
    ImapConnectionLost,
    ImapError,
    ImapFolderError,
    ImapProtocolError,
)
from .responses import (
    FetchRecord,
    ListEntry,
    MailboxStatus,
    completion_text,
    parse_appenduid,
    parse_fetch,
    parse_list,
    parse_search,
    parse_select,
    quote,
    quote_folder,
    uid_set,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# RFC 5530 response codes meaning "try again later" rather than "wrong credentials".
_TEMPORARY_LOGIN_CODES = (b"[UNAVAILABLE]", b"[SERVERBUG]", b"[INUSE]", b"[LIMIT]")
_LOGOUT_TIMEOUT_S = 2.0
# a silently dead peer (no FIN/RST) is noticed after about 60 + 4 * 15 s instead of at the
# next IDLE renewal; Dovecot itself only sends a keep-alive every 2 minutes while idling
_KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4))


def _enable_keepalive(sock: Any) -> None:
    """`sock` is the transport's socket (an asyncio TransportSocket) or None."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in _KEEPALIVE:
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


# aioimaplib does not know NOTIFY (RFC 5465); like SELECT, it is answered before anything else runs
aioimaplib.Commands.setdefault(
    "NOTIFY", aioimaplib.Cmd("NOTIFY", (aioimaplib.AUTH, aioimaplib.SELECTED), aioimaplib.Exec.is_sync)
)
_NOTHING = frozenset[str]()


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """Shows every untagged response to `on_untagged` first: aioimaplib drops those that arrive
    during other commands (e.g. an EXISTS during UID SEARCH) and those that arrive while no
    command runs (NOTIFY's), and a new-mail signal must never be missed."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        conn_lost_cb: Callable[[Exception | None], None] | None,
        on_untagged: Callable[[bytes, frozenset[str]], None],
    ) -> None:
        super().__init__(loop, conn_lost_cb)
        self._on_untagged = on_untagged

    #: answer to a SASL error challenge during AUTHENTICATE (set while a bearer login runs)
    sasl_failure_reply: str | None = None

    def _continuation(self, line: bytes) -> None:
        cmd = self.pending_sync_command
        if self.sasl_failure_reply is not None and cmd is not None and cmd.name == "AUTHENTICATE":
            # the server's error details come as a challenge; the answer gets the tagged NO
            self.transport.write(self.sasl_failure_reply.encode("ascii") + b"\r\n")
            return
        super()._continuation(line)

    def _untagged_response(self, line: bytes) -> aioimaplib.Command:
        pending = self.pending_sync_command
        answering = frozenset(self.pending_async_commands) if self.pending_async_commands else _NOTHING
        if pending is not None:
            answering |= {"SELECT" if pending.name == "EXAMINE" else pending.name}
        self._on_untagged(line, answering)
        if pending is None and not self.pending_async_commands:
            return None  # unsolicited (NOTIFY, or between commands): taken in by on_untagged
        return super()._untagged_response(line)


class _Client(aioimaplib.IMAP4):  # type: ignore[misc]
    def __init__(self, *, on_untagged: Callable[[bytes, frozenset[str]], None], **kwargs: Any) -> None:
        self._on_untagged = on_untagged
        super().__init__(**kwargs)

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Callable[[Exception | None], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb, self._on_untagged)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        )


class ImapConnection:
    """An authenticated IMAP session. Create with `await ImapConnection.open(account)`.

    `changes` collects what the server announced on its own (see `Changes`); `exists_seen`
    counts its EXISTS lines: compare it before and after a catch-up to know whether more mail
    arrived meanwhile.
    """

    def __init__(self, account: ImapAccount) -> None:
        self.account = account
        self._client: aioimaplib.IMAP4 | None = None
        self._lost = asyncio.Event()
        self._lost_reason = "the connection was closed"
        self._broken = False
        self._closed = False
        self._idle_task: asyncio.Future[aioimaplib.Response] | None = None
        self.changes = Changes()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, account: ImapAccount) -> ImapConnection:
        """Connect, secure the channel as configured and log in; raises an ImapError subclass."""
        conn = cls(account)
        try:
            await conn._connect()
            await conn._authenticate()
        except BaseException:
            conn.abort()
            raise
        return conn

    @property
    def usable(self) -> bool:
        return not (self._closed or self._broken or self._lost.is_set())

    @property
    def capabilities(self) -> frozenset[str]:
        assert self._client is not None
        return frozenset(c.upper() for c in self._client.protocol.capabilities)

    @property
    def supports_idle(self) -> bool:
        return "IDLE" in self.capabilities

    @property
    def supports_notify(self) -> bool:
        return "NOTIFY" in self.capabilities

    @property
    def supports_condstore(self) -> bool:
        return "CONDSTORE" in self.capabilities and "ENABLE" in self.capabilities

    @property
    def exists_seen(self) -> int:
        return self.changes.exists_seen

    async def close(self) -> None:
        """LOGOUT if the session is healthy (bounded wait), then close the socket. Idempotent."""
        if self._closed:
            return
        if self._client is not None and self.usable and self._idle_task is None:
            try:
                await self._race(self._client.logout(), "LOGOUT", timeout=_LOGOUT_TIMEOUT_S)
            except ImapError as exc:
                log.debug("IMAP LOGOUT for %s failed: %s", self.account.username, exc.reason)
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once, without LOGOUT. Idempotent."""
        self._closed = True
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        if self._client is None:
            return
        # aioimaplib's own tasks (the greeting handler) would wait forever for an answer and be
        # garbage-collected still holding its state lock: end them with the connection.
        for task in list(getattr(self._client.protocol, "tasks", ())):
            task.cancel()
        idle_timer = getattr(self._client, "_idle_waiter", None)  # aioimaplib's IDLE timeout
        if idle_timer is not None:
            idle_timer.cancel()
        transport = self._client.protocol.transport
        if transport is not None:
            transport.close()
        elif not self._client._client_task.done():
            self._client._client_task.cancel()

    def _note_untagged(self, line: bytes, answering: frozenset[str]) -> None:
        self.changes.note(line, answering)

    def _on_connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._lost_reason = f"the connection was lost ({exc})"
        elif not self._closed:
            self._lost_reason = "the server closed the connection"
        self._lost.set()

    # ------------------------------------------------------------------ connect + login

    def _connect_error(self, exc: BaseException) -> ImapError:
        acc = self.account
        where = f"{acc.host}:{acc.port}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            detail = exc.verify_message or str(exc)
            return ImapCertificateError(
                f"the TLS certificate of {acc.host} could not be verified ({detail})"
            )
        if isinstance(exc, ssl.SSLError):
            return ImapConnectFailed(f"the TLS handshake with {where} failed ({exc.reason or exc})")
        if isinstance(exc, socket.gaierror):
            return ImapConnectFailed(f"the host name {acc.host} could not be resolved")
        if isinstance(exc, ConnectionRefusedError):
            return ImapConnectFailed(f"the connection to {where} was refused")
        if isinstance(exc, TimeoutError):
            return ImapConnectFailed(f"{where} did not answer within {acc.timeout:g} s")
        if isinstance(exc, OSError):
            return ImapConnectFailed(f"cannot connect to {where} ({exc.strerror or exc})")
        if isinstance(exc, aioimaplib.AioImapException):
            return ImapProtocolError(f"{where} did not greet like an IMAP server ({exc})")
        raise exc

    async def _connect(self) -> None:
        acc = self.account
        try:
            ctx = acc.ssl_context() if acc.security in ("tls", "starttls") else None
        except (OSError, ssl.SSLError) as exc:
            raise ImapConfigError(f"cannot load the CA file {acc.ca_file!r} ({exc})") from exc
        self._client = _Client(
            on_untagged=self._note_untagged,
            host=acc.host,
            port=acc.port,
            timeout=acc.timeout,
            conn_lost_cb=self._on_connection_lost,
            ssl_context=ctx if acc.security == "tls" else None,
        )
        try:
            # Our own bound too: aioimaplib's timeout cannot end a greeting whose CAPABILITY
            # goes unanswered (its cancelled waiter waits for the lock the greeting holds).
            await self._race(self._client.wait_hello_from_server(), "the greeting", raw=True,
                             timeout=acc.timeout)
        except ImapConnectionLost as exc:
            what = ("closed the connection before greeting" if self._lost.is_set()
                    else f"did not complete its greeting within {acc.timeout:g} s")
            raise ImapConnectFailed(f"{acc.host}:{acc.port} {what}") from exc
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            raise self._connect_error(exc) from exc
        transport = self._client.protocol.transport
        _enable_keepalive(transport.get_extra_info("socket") if transport is not None else None)
        if acc.security == "starttls":
            assert ctx is not None
            await self._starttls(ctx)

    async def _starttls(self, ctx: ssl.SSLContext) -> None:
        assert self._client is not None
        proto = self._client.protocol
        if "STARTTLS" not in self.capabilities:
            raise ImapProtocolError(
                "the server does not offer STARTTLS; use implicit TLS (usually port 993)"
            )
        cmd = aioimaplib.Command("STARTTLS", proto.new_tag(), loop=proto.loop)
        resp = await self._race(proto.execute(cmd), "STARTTLS", timeout=self.account.timeout)
        self._check_ok(resp, "STARTTLS")
        if proto.incomplete_line:
            # data sent in clear after the OK could be injected by an attacker
            raise ImapProtocolError("the server sent unexpected data after STARTTLS")
        loop = asyncio.get_running_loop()
        try:
            tls_transport = await loop.start_tls(
                proto.transport,
                proto,
                ctx,
                server_hostname=self.account.host,
                ssl_handshake_timeout=self.account.timeout,
            )
        except (OSError, TimeoutError) as exc:
            self._broken = True
            raise self._connect_error(exc) from exc
        proto.transport = tls_transport
        # capabilities learnt before TLS must be discarded (RFC 3501 6.2.1)
        await self._race(proto.capability(), "CAPABILITY", timeout=self.account.timeout)

    async def _authenticate(self) -> None:
        assert self._client is not None
        proto = self._client.protocol
        caps = self.capabilities
        if "LOGINDISABLED" in caps:
            raise ImapProtocolError("the server refuses to log in on an unencrypted connection")
        user, password = self.account.username, self.account.password
        if self.account.bearer is not None:
            cmd, secret = await self._bearer_command(caps)
        elif "AUTH=PLAIN" in caps and "SASL-IR" in caps:
            # SASL PLAIN carries any UTF-8 and needs no quoting
            token = base64.b64encode(
                b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")
            ).decode("ascii")
            cmd = aioimaplib.Command(
                "AUTHENTICATE", proto.new_tag(), "PLAIN", token, loop=proto.loop
            )
            secret = token
        else:
            if any(c in user + password for c in "\0\r\n"):
                raise ImapAuthFailed("the username or password contains a line break or NUL")
            secret = quote(password)
            cmd = aioimaplib.Command("LOGIN", proto.new_tag(), quote(user), secret, loop=proto.loop)
        try:
            resp = await self._race(
                proto.execute(cmd, scrub=secret), "login", timeout=self.account.timeout, secret=True
            )
        finally:
            proto.sasl_failure_reply = None
        if resp.result != "OK":
            text = completion_text(resp.lines)
            last = bytes(resp.lines[-1]) if resp.lines else b""
            if resp.result == "NO" and any(code in last for code in _TEMPORARY_LOGIN_CODES):
                raise ImapConnectFailed(f"the server cannot log you in right now ({text})")
            if resp.result == "NO":
                what = "sign-in token" if self.account.bearer else "username or password"
                raise ImapAuthFailed(f"the server rejected the {what} ({text})")
            raise ImapProtocolError(f"the server did not accept the login command ({text})")
        proto.state = aioimaplib.AUTH
        await self._race(proto.capability(), "CAPABILITY", timeout=self.account.timeout)

    async def _bearer_command(self, caps: frozenset[str]) -> tuple[aioimaplib.Command, str]:
        """AUTHENTICATE OAUTHBEARER/XOAUTH2 with the token as initial response (SASL-IR)."""
        assert self._client is not None and self.account.bearer is not None
        proto = self._client.protocol
        offered = {c.split("=", 1)[1] for c in caps if c.startswith("AUTH=")}
        mechanism = choose_mechanism(offered, self.account.bearer_mechanisms)
        if mechanism is None or "SASL-IR" not in caps:
            raise ImapProtocolError(
                f"the server offers no OAuth login ({', '.join(self.account.bearer_mechanisms)}"
                " with SASL-IR)"
            )
        try:
            token = await self.account.bearer.access_token()
            secret = initial_response(mechanism, self.account.username, token)
        except BearerUnavailable as exc:
            if exc.permanent:
                raise ImapAuthFailed(exc.reason) from None
            raise ImapConnectFailed(exc.reason) from None
        proto.sasl_failure_reply = failure_reply(mechanism)
        return aioimaplib.Command("AUTHENTICATE", proto.new_tag(), mechanism, secret,
                                  loop=proto.loop), secret

    # ------------------------------------------------------------------ plumbing

    async def _race(
        self,
        aw: Awaitable[T],
        what: str,
        *,
        timeout: float | None = None,
        secret: bool = False,
        raw: bool = False,
    ) -> T:
        """Await `aw`, but give up as soon as the connection is lost or `timeout` passes.

        aioimaplib errors become ImapError unless `raw` (then they propagate unchanged).
        With `secret`, error texts are not copied (aioimaplib may echo the command).
        """
        if not self.usable:
            if asyncio.iscoroutine(aw):
                aw.close()
            raise ImapConnectionLost(self._lost_reason if self._lost.is_set() else "session closed")
        task = asyncio.ensure_future(aw)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            self._broken = True
            task.cancel()
            raise
        finally:
            lost.cancel()
        if task not in done:
            self._broken = True
            task.cancel()
            if lost in done:
                raise ImapConnectionLost(self._lost_reason)
            raise ImapConnectionLost(f"the server did not answer {what} within {timeout:g} s")
        try:
            return task.result()
        except (TimeoutError, aioimaplib.CommandTimeout):
            self._broken = True
            if raw:
                raise
            raise ImapConnectionLost(
                f"the server did not answer {what} within {self.account.timeout:g} s"
            ) from None
        except aioimaplib.AioImapException as exc:
            self._broken = True
            if raw:
                raise
            if secret:
                raise ImapProtocolError(f"unexpected answer to {what}") from None
            raise ImapProtocolError(f"unexpected answer to {what} ({exc})") from exc

    @staticmethod
    def _check_ok(resp: aioimaplib.Response, what: str) -> None:
        if resp.result != "OK":
            raise ImapProtocolError(
                f"the server refused {what}: {resp.result} {completion_text(resp.lines)}"
            )

    @property
    def _c(self) -> aioimaplib.IMAP4:
        if self._client is None:
            raise ImapConnectionLost("not connected")
        return self._client

    # ------------------------------------------------------------------ commands

    async def select(self, folder: str) -> MailboxStatus:
        resp = await self._race(self._c.select(quote_folder(folder)), "SELECT")
        if resp.result != "OK":
            raise ImapFolderError(
                folder, f"cannot open the folder {folder!r}: {completion_text(resp.lines)}"
            )
        return parse_select(resp.lines)

    async def uid_search(self, *criteria: str) -> list[int]:
        resp = await self._race(self._c.uid_search(*criteria, charset=None), "UID SEARCH")
        self._check_ok(resp, "UID SEARCH")
        return parse_search(resp.lines)

    async def uid_fetch(self, uids: Iterable[int], items: str) -> list[FetchRecord]:
        resp = await self._race(self._c.uid("fetch", uid_set(uids), items), "UID FETCH")
        self._check_ok(resp, "UID FETCH")
        return parse_fetch(resp.lines)

    async def uid_store(self, uids: Iterable[int], operation: str, flags: Sequence[str]) -> None:
        # aioimaplib puts no timeout on UID STORE
        resp = await self._race(
            self._c.uid("store", uid_set(uids), operation, f"({' '.join(flags)})"),
            "UID STORE",
            timeout=self.account.timeout,
        )
        self._check_ok(resp, "UID STORE")

    async def list_folders(self, pattern: str = "*") -> list[ListEntry]:
        resp = await self._race(self._c.list(quote(""), quote(pattern)), "LIST")
        self._check_ok(resp, "LIST")
        return parse_list(resp.lines)

    async def create(self, folder: str) -> None:
        resp = await self._race(self._c.create(quote_folder(folder)), "CREATE")
        self._check_ok(resp, f"creating the folder {folder!r}")

    async def delete(self, folder: str) -> None:
        resp = await self._race(self._c.delete(quote_folder(folder)), "DELETE")
        self._check_ok(resp, f"deleting the folder {folder!r}")

    async def append(
        self,
        folder: str,
        raw: bytes,
        flags: Sequence[str] = (),
        date: datetime | None = None,
    ) -> tuple[int, int] | None:
        """APPEND a message; returns (uidvalidity, uid) when the server supports UIDPLUS."""
        resp = await self._race(
            self._c.append(
                raw,
                mailbox=quote_folder(folder),
                flags=f"({' '.join(flags)})" if flags else None,
                date=date,
            ),
            "APPEND",
        )
        if resp.result != "OK":
            raise ImapFolderError(
                folder, f"cannot store the message in {folder!r}: {completion_text(resp.lines)}"
            )
        return parse_appenduid(resp.lines)

    async def enable_condstore(self) -> None:
        """ENABLE CONDSTORE (RFC 7162): SELECT then reports HIGHESTMODSEQ. Right after login."""
        resp = await self._race(
            self._c.protocol.simple_command("ENABLE", "CONDSTORE"), "ENABLE",
            timeout=self.account.timeout,
        )
        self._check_ok(resp, "ENABLE CONDSTORE")

    async def notify(self, others: Sequence[str]) -> None:
        """NOTIFY SET (RFC 5465): from now on the server announces, at any time, new mail,
        expunges and flag changes of the selected folder (EXISTS/EXPUNGE/FETCH) and of the
        folders `others` (STATUS; with STATUS it first reports each of them). A folder that
        is also selected must not be among `others`: Dovecot then announces nothing of it."""
        events = "(MessageNew MessageExpunge FlagChange)"
        specs = [f"(selected {events})"]
        if others:
            names = " ".join(quote_folder(f) for f in others)
            specs.append(f"(mailboxes ({names}) {events})")
        cmd = aioimaplib.Command(
            "NOTIFY", self._c.protocol.new_tag(), "SET", "STATUS", *specs,
            loop=self._c.protocol.loop,
        )
        resp = await self._race(self._c.protocol.execute(cmd), "NOTIFY",
                                timeout=self.account.timeout)
        self._check_ok(resp, "NOTIFY")

    async def noop(self) -> None:
        resp = await self._race(self._c.noop(), "NOOP", timeout=self.account.timeout)
        self._check_ok(resp, "NOOP")

    async def wait_changes(self, timeout: float, wake: asyncio.Event) -> bool:
        """Wait (without IDLE: under NOTIFY the server announces changes at any time) until the
        server announces a change, `wake` is set or `timeout` passes; True for a change. A
        NOOP after `timeout` keeps the session from being logged out as inactive."""
        waiters = {asyncio.ensure_future(e.wait()) for e in (self.changes.event, wake, self._lost)}
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._lost.is_set():
            raise ImapConnectionLost(self._lost_reason)
        if self.changes.event.is_set():
            return True
        if not wake.is_set():
            await self.noop()
        return self.changes.event.is_set()

    async def changed_flags(self, modseq: int) -> list[FetchRecord]:
        """UID and FLAGS of the selected folder's messages changed since `modseq` (CONDSTORE)."""
        resp = await self._race(
            self._c.uid("fetch", "1:*", f"(UID FLAGS) (CHANGEDSINCE {modseq})"), "UID FETCH"
        )
        self._check_ok(resp, "UID FETCH CHANGEDSINCE")
        return parse_fetch(resp.lines)

    async def idle(self, timeout: float, wake: asyncio.Event | None = None) -> bool:
        """IDLE on the selected folder.

        Returns True when the server announces a change (new mail, an expunge, a flag change;
        see `changes`), False when `timeout` passes or `wake` is set. Either way IDLE is ended
        (DONE) before returning.
        """
        if self.changes.event.is_set():
            return True  # announced between commands
        client = self._c
        queue = client.protocol.idle_queue
        while not queue.empty():
            queue.get_nowait()  # leftovers from an earlier IDLE
        idle_task: asyncio.Future[aioimaplib.Response] = await self._race(
            client.idle_start(timeout=timeout + 60), "IDLE", timeout=self.account.timeout
        )
        self._idle_task = idle_task
        # One wait for the whole IDLE: the server's keep-alives ("OK Still here", every few
        # minutes on each of thousands of sessions) wake nothing here (they only pile up in
        # aioimaplib's queue, emptied at the next IDLE), announcements come through `changes`.
        waiters = {asyncio.ensure_future(self.changes.event.wait()),
                   asyncio.ensure_future(self._lost.wait()), idle_task}
        if wake is not None:
            waiters.add(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if self._lost.is_set():
                raise ImapConnectionLost(self._lost_reason)
            if self.changes.bye is not None:
                raise ImapConnectionLost(f"the server is closing the session ({self.changes.bye})")
            if idle_task.done():
                raise ImapConnectionLost("the server ended IDLE unexpectedly")
        except BaseException:
            self._broken = True
            raise
        finally:
            for waiter in waiters:
                if waiter is not idle_task:
                    waiter.cancel()
        new_mail = self.changes.event.is_set()
        client.idle_done()
        resp = await self._race(idle_task, "DONE", timeout=self.account.timeout)
        self._idle_task = None
        self._check_ok(resp, "IDLE")
        return new_mail


async def check_login(account: ImapAccount) -> None:
    """Connect, secure the channel, log in and log out. Raises an ImapError subclass on failure."""
    conn = await ImapConnection.open(account)
    await conn.close()
