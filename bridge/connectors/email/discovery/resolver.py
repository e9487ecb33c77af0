"""DNS lookups of the discovery, through dnspython: the system's resolver, or one the operator
names (`network.email.dns.nameserver`, e.g. a split-horizon resolver, or the test rig's).

The HTTP requests of the discovery resolve their host names here too (an aiohttp resolver), so a
lookup never silently uses a different view of DNS than the SRV and MX queries.
"""

from __future__ import annotations

from collections.abc import Callable
import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
import dns.asyncresolver
import dns.exception
import dns.resolver

from ..nameserver import Nameserver


class DnsResolver:
    def __init__(self, nameserver: Nameserver | None, timeout: float) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            nameserver.configure(self._resolver)
        self._resolver.lifetime = timeout

    async def records(self, name: str, kind: str) -> list[Any]:
        """The answers of one query; empty when the name or record does not exist."""
        try:
            answer = await self._resolver.resolve(name, kind)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []
        return list(answer)

    async def addresses(self, host: str) -> list[str]:
        found: list[str] = []
        for kind in ("A", "AAAA"):
            try:
                found += [r.address for r in await self.records(host, kind)]
            except dns.exception.Timeout:
                continue
        return found

    def for_http(self, allowed: AddressCheck | None = None) -> AbstractResolver:
        """An aiohttp resolver through this one; with `allowed`, addresses it refuses are never
        connected to (a host with none left fails like one that does not exist)."""
        return _HttpResolver(self, allowed)


AddressCheck = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool]


class _HttpResolver(AbstractResolver):
    def __init__(self, dns_resolver: DnsResolver, allowed: AddressCheck | None) -> None:
        self._dns = dns_resolver
        self._allowed = allowed

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = await self._dns.addresses(host)
        if self._allowed is not None:
            addresses = [a for a in addresses if self._allowed(ipaddress.ip_address(a))]
        if not addresses:
            raise OSError(f"{host} has no address the bridge may connect to")
        return [ResolveResult(hostname=host, host=a, port=port,
                              family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST) for a in addresses]

    async def close(self) -> None:
        return None
