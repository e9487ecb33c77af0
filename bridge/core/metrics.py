"""Prometheus metrics and liveness/readiness on a listener of their own (`metrics.*` config).

`/metrics` (prometheus-client's text format), `/health/live` (the process answers) and
`/health/ready` (started, and the database answers). Gauges of state (logins by state, portals,
and the connector's own `GaugeReading`s) are read from the bridge when scraped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from ..network import GaugeReading, LoginState

if TYPE_CHECKING:
    from .bridge import Bridge


class Metrics:
    """The bridge's metrics, in a registry of their own (several bridges may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.matrix_events = Counter("letterbox_matrix_events", "Matrix events handled",
                                     ["type"], registry=self.registry)
        self.matrix_event_seconds = Histogram("letterbox_matrix_event_seconds",
                                              "Time to handle one Matrix event", ["type"],
                                              registry=self.registry)
        self.remote_events = Counter("letterbox_remote_events", "Remote events handed to the core",
                                     ["type"], registry=self.registry)
        self.remote_event_seconds = Histogram("letterbox_remote_event_seconds",
                                              "Time from a remote event to Matrix", ["type"],
                                              registry=self.registry)
        self.send_failures = Counter("letterbox_send_failures", "Matrix messages not delivered",
                                     registry=self.registry)
        self.logins = Gauge("letterbox_logins", "Logins by state", ["state"],
                            registry=self.registry)
        self.portals = Gauge("letterbox_portals", "Portals in memory", registry=self.registry)
        self._network: dict[str, Gauge] = {}

    def set_network_gauges(self, network: str, readings: list[GaugeReading]) -> None:
        """Replace the connector's gauges with this scrape's readings (label sets that are gone
        disappear)."""
        for gauge in self._network.values():
            gauge.clear()
        for r in readings:
            name = f"letterbox_{network}_{r.name}"
            if name not in self._network:
                self._network[name] = Gauge(name, r.help, sorted(r.labels), registry=self.registry)
            gauge = self._network[name]
            (gauge.labels(**r.labels) if r.labels else gauge).set(r.value)

    def observe_matrix(self, event_type: str, started: float) -> None:
        self.matrix_events.labels(event_type).inc()
        self.matrix_event_seconds.labels(event_type).observe(time.monotonic() - started)

    def observe_remote(self, event_type: str, started: float) -> None:
        self.remote_events.labels(event_type).inc()
        self.remote_event_seconds.labels(event_type).observe(time.monotonic() - started)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class MetricsServer:
    def __init__(self, bridge: Bridge, metrics: Metrics) -> None:
        self.bridge = bridge
        self.metrics = metrics
        self.app = web.Application()
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/health/live", self._live)
        self.app.router.add_get("/health/ready", self._ready)

    async def _metrics(self, request: web.Request) -> web.Response:
        counts = {state: 0 for state in LoginState}
        for login in self.bridge.logins.values():
            counts[login.state] += 1
        for state, count in counts.items():
            self.metrics.logins.labels(state.value).set(count)
        self.metrics.portals.set(len(self.bridge.portals))
        self.metrics.set_network_gauges(self.bridge.connector.name,
                                        await self.bridge.connector.gauges())
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def _ready(self, request: web.Request) -> web.Response:
        problem = await self.bridge.readiness_problem()
        if problem:
            return web.json_response({"ready": False, "reason": problem}, status=503)
        return web.json_response({"ready": True})
