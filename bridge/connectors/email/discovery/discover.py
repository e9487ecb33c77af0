"""Find a mailbox's servers from its address, the way mail clients do.

Sources, best first: the MX host of a big provider (its OAuth sign-in and servers), the domain's
autoconfig XML (`autoconfig.<domain>`, then `<domain>/.well-known/autoconfig/`), RFC 6186 SRV
records (`_imaps`/`_imap`, `_submissions`/`_submission`). All lookups run at once under one time
limit; redirects are not followed; an autoconfig document is read up to `MAX_XML_BYTES`. What is
found is only a suggestion: the user confirms it, and the servers are tried before anything is
saved.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import logging
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp
import dns.exception

from ..oauth.providers import OAuthProvider
from ..servers import ServerSpec
from .autoconfig import AutoconfigServers, parse_autoconfig
from .resolver import AddressCheck, DnsResolver

log = logging.getLogger("letterbox.email.discovery")

MAX_XML_BYTES = 64 * 1024
# RFC 6186 (and RFC 8314 for implicit TLS submission): service label -> kind, security
_SRV = (("_imaps._tcp", "imap", "tls"), ("_imap._tcp", "imap", "starttls"),
        ("_submissions._tcp", "smtp", "tls"), ("_submission._tcp", "smtp", "starttls"))


@dataclass(frozen=True, slots=True)
class Discovered:
    imap: ServerSpec | None = None
    smtp: ServerSpec | None = None
    #: where the settings came from, for the user
    source: str = ""
    #: the provider hosting the domain (by its MX), when the bridge knows it
    provider: OAuthProvider | None = None

    @property
    def found(self) -> bool:
        return self.imap is not None or self.smtp is not None or self.provider is not None


async def _mx_provider(resolver: DnsResolver, domain: str,
                       providers: tuple[OAuthProvider, ...]) -> OAuthProvider | None:
    hosts = [str(r.exchange).rstrip(".").lower() for r in await resolver.records(domain, "MX")]
    for provider in providers:
        if any(h.endswith(s.lower()) or h == s.lower().lstrip(".")
               for h in hosts for s in provider.mx_suffixes):
            return provider
    return None


async def _srv(resolver: DnsResolver, domain: str) -> dict[str, ServerSpec]:
    found: dict[str, ServerSpec] = {}
    for label, kind, security in _SRV:
        if kind in found:
            continue
        records = sorted(await resolver.records(f"{label}.{domain}", "SRV"),
                         key=lambda r: (r.priority, -r.weight))
        for record in records:
            target = str(record.target).rstrip(".").lower()
            if target and 0 < record.port < 65536:  # "." means: no such service here
                found[kind] = ServerSpec(target, int(record.port), security)
                break
    return found


async def _fetch(http: aiohttp.ClientSession, url: str) -> bytes | None:
    try:
        async with http.get(url, allow_redirects=False) as resp:
            if resp.status != 200:
                return None
            data = await resp.content.read(MAX_XML_BYTES + 1)
            return data if len(data) <= MAX_XML_BYTES else None
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        log.debug("No autoconfig at %s: %s", url, type(exc).__name__)
        return None


async def _autoconfig(resolver: DnsResolver, domain: str, address: str, ca_file: str | None,
                      timeout: float, allowed: AddressCheck | None
                      ) -> tuple[AutoconfigServers, str] | None:
    ctx = ssl.create_default_context(cafile=ca_file)
    connector = aiohttp.TCPConnector(resolver=resolver.for_http(allowed), ssl=ctx)
    urls = [f"{scheme}://{host}{path}"
            for host, path in ((f"autoconfig.{domain}",
                                f"/mail/config-v1.1.xml?emailaddress={quote(address)}"),
                               (domain, "/.well-known/autoconfig/mail/config-v1.1.xml"))
            for scheme in ("https", "http")]
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        for url in urls:
            data = await _fetch(http, url)
            parsed = parse_autoconfig(data, address) if data else None
            if parsed is not None:
                return parsed, url.split("/")[2]
    return None


async def discover(address: str, resolver: DnsResolver, providers: tuple[OAuthProvider, ...], *,
                   ca_file: str | None, timeout: float,
                   allowed: AddressCheck | None = None) -> Discovered:
    """Everything found about `address`'s domain within `timeout` seconds (maybe nothing).

    `allowed` says which addresses the discovery's HTTP requests may reach (the server-host rule
    of a user who is not an admin); what it finds is only offered, and checked again when tried.
    """
    domain = address.rpartition("@")[2].lower()

    async def guarded(coro: Any) -> Any:
        try:
            return await coro
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            log.info("Discovery step for %s failed: %s", domain, type(exc).__name__)
            return None

    tasks = [asyncio.ensure_future(guarded(c)) for c in (
        _mx_provider(resolver, domain, providers), _autoconfig(resolver, domain, address, ca_file,
                                                               timeout, allowed), _srv(resolver, domain))]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    provider, auto, srv = (t.result() if t in done else None for t in tasks)
    if provider is not None:
        return Discovered(provider.imap, provider.smtp, f"{provider.name} hosts {domain}", provider)
    if auto is not None:
        servers, host = auto
        return Discovered(servers.imap, servers.smtp, f"the autoconfig file at {host}")
    if srv:
        return Discovered(srv.get("imap"), srv.get("smtp"), f"the DNS SRV records of {domain}")
    return Discovered()
