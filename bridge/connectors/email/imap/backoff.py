"""Jittered exponential back-off for reconnects and retries."""

from __future__ import annotations

from dataclasses import dataclass, field
import random


@dataclass(slots=True)
class Backoff:
    """Delays grow `initial_s`, 2x, 4x ... up to `max_s`; each one is drawn uniformly from
    [d/2, d] ("equal jitter") so that many accounts do not reconnect in lockstep."""

    initial_s: float = 1.0
    max_s: float = 300.0
    factor: float = 2.0
    rng: random.Random = field(default=random.Random(), repr=False)  # one for all: 2.5 KiB each
    attempts: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s or self.factor < 1:
            raise ValueError("need 0 < initial_s <= max_s and factor >= 1")

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * self.factor**self.attempts)
        self.attempts += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0
