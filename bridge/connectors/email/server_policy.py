"""Which mail servers a user may have the bridge connect to.

The bridge connects from inside the operator's network. A user who is not an admin may only name
servers at public addresses, plus the hosts and networks the operator allows
(`network.email.allowed_private_servers`). A server refused by this rule gets the same answer as
one that cannot be reached, so the login flow cannot be used to map internal hosts and ports.

Checked when the servers are entered (every address the name resolves to must be allowed), and
for every address the discovery's HTTP requests would reach (autoconfig). A name whose DNS answer
changes later (rebinding) is not re-checked on each connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import ipaddress
import socket

from .servers import ServerSpec

# The one answer for a refused or unreachable server (with the kind and server before it).
UNREACHABLE = "the bridge cannot connect to this server"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: list[str]) -> ServerPolicy:
        """Entries are host names or IP networks (`10.0.0.0/8`, `127.0.0.1`); raises ValueError."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not entry or any(c.isspace() or c in "/:" for c in entry):
                    raise ValueError(f"{entry!r} is neither a host name nor an IP network") from None
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    async def allows(self, spec: ServerSpec) -> bool:
        host = spec.host.lower().rstrip(".")
        if host in self.hosts:
            return True
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                spec.host, spec.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return False  # unresolvable: answered like any unreachable server
        addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
        return bool(addresses) and all(self.address_allowed(a) for a in addresses)

    def address_allowed(self, address: IPAddress) -> bool:
        if any(address in net for net in self.networks):
            return True
        return address.is_global
