"""Time stamps from inside the in-process bridge, to tell where a mail's latency goes.

Nothing in the bridge is changed: the IMAP engine's own debug log line says when a catch-up
found the new UID, and the bridge instance's `queue_remote_event` is wrapped to note when a
converted mail is handed to the portal (after fetch, parse, convert) and when its Matrix event
was sent and stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
import logging
import time
from typing import Any

from bridge.core.bridge import Bridge

FOLDER_SYNC_LOGGER = "bridge.connectors.email.imap.folder_sync"


class _NoticeHandler(logging.Handler):
    def __init__(self, sink: list[float]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if "new message(s) after UID" in record.msg:
            self.sink.append(time.monotonic())


@dataclass(slots=True)
class StageProbe:
    """`noticed`: times the IMAP engine found new UIDs; `queued`/`posted`: per Message-ID."""

    noticed: list[float] = field(default_factory=list)
    queued: dict[str, float] = field(default_factory=dict)
    posted: dict[str, float] = field(default_factory=dict)
    _handler: _NoticeHandler | None = None
    _previous_level: int = logging.NOTSET

    def attach_logging(self) -> None:
        logger = logging.getLogger(FOLDER_SYNC_LOGGER)
        self._handler = _NoticeHandler(self.noticed)
        self._previous_level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self._handler)

    def detach_logging(self) -> None:
        logger = logging.getLogger(FOLDER_SYNC_LOGGER)
        if self._handler is not None:
            logger.removeHandler(self._handler)
            logger.setLevel(self._previous_level)
            self._handler = None

    def wrap(self, bridge: Bridge) -> None:
        """Wrap this bridge instance's queue_remote_event (the class is untouched); call it
        before Bridge.start(), which hands the instance to the connector."""
        inner: Callable[..., Awaitable[Any]] = bridge.queue_remote_event

        async def timed(login_id: Any, event: Any) -> Any:
            message_id = str(getattr(event, "message_id", ""))
            self.queued.setdefault(message_id, time.monotonic())
            portal = await inner(login_id, event)  # the connector records where the mail went
            self.posted.setdefault(message_id, time.monotonic())
            return portal

        bridge.queue_remote_event = timed  # type: ignore[method-assign]
