"""Tunables of the sync engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backfill:
    """How much history a folder's first sync delivers: the newest `max_messages` messages
    received within the last `max_age_days` days (None: no age limit). 0 messages: none,
    the folder is synced from "now". The bridge's values come from the config
    (`network.email.backfill`)."""

    max_age_days: int | None
    max_messages: int

    def __post_init__(self) -> None:
        if self.max_messages < 0 or (self.max_age_days is not None and self.max_age_days < 0):
            raise ValueError("backfill limits must not be negative")


@dataclass(frozen=True, slots=True)
class DeliveryRetry:
    """Failure policy for `MailSink.deliver`.

    A mail whose delivery raises is retried in place, in UID order, up to `attempts` times
    with exponential delays (`initial_delay_s`, doubled each time, capped at `max_delay_s`;
    defaults: 1+2+4+8 = 15 s). Later mail of the folder waits meanwhile, so order is kept.
    After the last failure the engine calls `MailSink.failed(mail, exc)` and moves on.
    """

    attempts: int = 5
    initial_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("attempts must be >= 1 and delays >= 0")

    def delay(self, failed_attempts: int) -> float:
        return min(self.max_delay_s, self.initial_delay_s * 2.0 ** (failed_attempts - 1))
