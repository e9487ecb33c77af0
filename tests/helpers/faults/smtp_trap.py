"""A relay in front of Postfix's submission port that kills the bridge at an exact moment of a
submission: a fault no real server produces on demand, so this is the one fake piece (the mail
still goes to the real Postfix).

The bridge logs in with `smtp=127.0.0.1:<relay port>:plain` (plain text is allowed towards
loopback), so the relay sees the SMTP dialogue. Armed with a phase, the next submission is cut:

* `mid-data`: part of the message has gone to Postfix when the bridge is killed and both
  connections are closed; Postfix discards the half-received mail, so the mail must arrive once,
  from the bridge's retry.
* `after-accept`: Postfix has answered 250 to the end of DATA (the mail is queued for delivery),
  and the bridge is killed before that reply reaches it. No SMTP client can know its mail went
  out: the restarted bridge sends it again (the same bytes, the same Message-ID). This is the
  residual window every SMTP submitter has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import contextlib
import re
import time

from devstack.ports import LOOPBACK

PHASES = ("mid-data", "after-accept")
_MESSAGE_ID = re.compile(r"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


class _Cut(Exception):
    """The armed phase was reached: the bridge is dead, drop both connections."""


class SmtpTrap:
    def __init__(self, upstream_port: int, kill: Callable[[], Awaitable[None]],
                 find_token: Callable[[str], list[str]]) -> None:
        self.upstream_port = upstream_port
        self.kill = kill
        self.find_token = find_token
        self.port = 0
        self._server: asyncio.Server | None = None
        self._armed: tuple[str, asyncio.Future[list[str]]] | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._firing: set[asyncio.Task[None]] = set()
        # (time.monotonic(), tokens, Message-ID) of every server 250 to a mail's data, in the
        # order the server gave them (also the ones the bridge never heard)
        self.accepted: list[tuple[float, list[str], str]] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        await asyncio.gather(*self._firing, return_exceptions=True)
        self.disarm()

    def arm(self, phase: str) -> asyncio.Future[list[str]]:
        """Cut the next submission at `phase`; the future gives the tokens of the cut mail."""
        assert phase in PHASES and self._armed is None
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._armed = (phase, future)
        return future

    def disarm(self) -> None:
        if self._armed is not None:
            self._armed[1].cancel()
            self._armed = None

    async def _fire(self, phase: str, payload: bytes) -> None:
        assert self._armed is not None and self._armed[0] == phase
        _, future = self._armed
        self._armed = None
        # Shielded: the kill closes the bridge's side of this session, which ends the other pump
        # and cancels this one; the kill and the report must still complete.
        firing = asyncio.create_task(self._kill_and_report(future, payload))
        self._firing.add(firing)
        firing.add_done_callback(self._firing.discard)
        await asyncio.shield(firing)
        raise _Cut()

    async def _kill_and_report(self, future: asyncio.Future[list[str]], payload: bytes) -> None:
        await self.kill()
        if not future.done():
            future.set_result(self.find_token(payload.decode("latin-1")))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.upstream_port)
        except OSError:
            writer.close()
            self._conns.discard(task)
            return
        state = _Dialogue()
        pumps = [asyncio.create_task(self._client_to_server(reader, up_writer, state)),
                 asyncio.create_task(self._server_to_client(up_reader, writer, state))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            self._conns.discard(task)

    async def _client_to_server(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter,
                                state: _Dialogue) -> None:
        with contextlib.suppress(_Cut, ConnectionError):
            while chunk := await reader.read(65536):
                if state.in_data:
                    state.payload += chunk
                    armed = self._armed
                    if armed is not None and armed[0] == "mid-data" and len(state.payload) > 64:
                        up.write(chunk[: len(chunk) // 2])
                        await up.drain()
                        await self._fire("mid-data", state.payload)
                    if state.payload.endswith(b"\r\n.\r\n"):
                        state.in_data, state.data_sent = False, True
                else:
                    state.command_buffer += chunk
                    *lines, state.command_buffer = state.command_buffer.split(b"\r\n")
                    if any(line.strip().upper() == b"DATA" for line in lines):
                        state.data_asked = True
                up.write(chunk)
                await up.drain()

    async def _server_to_client(self, up: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                state: _Dialogue) -> None:
        with contextlib.suppress(_Cut, ConnectionError):
            while line := await up.readline():
                if state.data_asked and line.startswith(b"354"):
                    state.data_asked, state.in_data, state.payload = False, True, b""
                elif state.data_sent:
                    state.data_sent = False
                    if line.startswith(b"250"):
                        text = state.payload.decode("latin-1")
                        found = _MESSAGE_ID.search(text)
                        self.accepted.append((time.monotonic(), self.find_token(text),
                                              found.group(1) if found else ""))
                    armed = self._armed
                    if armed is not None and armed[0] == "after-accept" and line.startswith(b"250"):
                        await self._fire("after-accept", state.payload)
                writer.write(line)
                await writer.drain()


class _Dialogue:
    """Where one SMTP session is: a DATA command asked, message data flowing, data ended."""

    def __init__(self) -> None:
        self.command_buffer = b""
        self.data_asked = False
        self.in_data = False
        self.data_sent = False
        self.payload = b""
