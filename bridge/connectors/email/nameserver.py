"""The DNS server the connector's own lookups ask (`network.email.dns.nameserver`).

DKIM keys (sender authenticity) and server discovery (SRV, MX, autoconfig hosts) are looked up
through dnspython; both ask this one server, or the system's resolver when none is named.
"""

from __future__ import annotations

from dataclasses import dataclass
import ipaddress

import dns.resolver


@dataclass(frozen=True, slots=True)
class Nameserver:
    host: str
    port: int = 53

    @classmethod
    def parse(cls, value: str) -> Nameserver:
        """`host`, `host:port` or `[IPv6]:port`; raises ValueError."""
        text = value.strip()
        host, port = text, "53"
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{value!r} is not host:port")
                port = rest[1:]
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host or host:port")
        if ":" in host:
            ipaddress.IPv6Address(host)  # a bare IPv6 address; raises ValueError otherwise
        return cls(host, int(port))

    def configure(self, resolver: dns.resolver.BaseResolver) -> None:
        """Point a dnspython resolver (made with `configure=False`) at this server."""
        resolver.nameservers = [self.host]
        resolver.port = self.port
