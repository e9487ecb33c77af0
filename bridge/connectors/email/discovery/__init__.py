"""Mail server settings found from an address: autoconfig XML, RFC 6186 SRV records, MX hosts."""

from .discover import Discovered, discover
from .resolver import DnsResolver

__all__ = ["Discovered", "DnsResolver", "discover"]
