"""Figures a connector reports for the bridge's Prometheus listener (read when scraped)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GaugeReading:
    """One value of a gauge the connector owns. The core exports it as
    `letterbox_<connector name>_<name>`; every reading of one name carries the same label keys."""

    name: str
    help: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)
