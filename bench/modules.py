"""The one list of measurements `python -m bench` runs, and the keys each one reports.

Every module here is `bench/<name>.py`, runnable as `python -m bench.<name> [--quick]
--json-out PATH`, and writes a flat JSON object of its keys (numbers, or null; optionally
`<key>_note` strings). A key listed under `NOT_IMPLEMENTED` has no module yet: the report holds
null for it and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Measurement:
    module: str  # bench/<module>.py
    keys: tuple[str, ...]
    # Wall-clock bound of one run (s): the module is stopped after it and its keys are null.
    timeout_s: float
    quick_timeout_s: float


MEASUREMENTS: tuple[Measurement, ...] = (
    Measurement("parser_memory", ("parser_peak_ratio",), 120, 60),
    Measurement("conversion_cost", ("conversion_ratio",), 180, 60),
    Measurement("inbound_latency", ("inbound_latency_ratio",), 240, 110),
    Measurement("burst_rooms", ("burst_rooms_ratio",), 150, 60),
    Measurement("outbound", ("outbound_own_p50_ms", "outbound_own_p90_ms", "send_100_ratio"),
                150, 90),
    # 1,000 mailboxes: ~3 of its ~7 minutes go to logging them in through the bot.
    Measurement("idle", ("idle_rss_ratio", "idle_cpu_percent", "idle_accounts", "reconnect_ratio"),
                480, 150),
    Measurement("failover", ("failover_s", "failover_lost", "failover_duplicated"), 600, 300),
)

# A measurement that gets a module moves to MEASUREMENTS.
NOT_IMPLEMENTED: dict[str, str] = {}


def all_keys() -> list[str]:
    return [k for m in MEASUREMENTS for k in m.keys] + list(NOT_IMPLEMENTED)
