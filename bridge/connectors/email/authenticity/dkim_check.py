"""Verifying DKIM signatures (RFC 6376) with dkimpy where no trusted server gave a verdict.

The public keys are looked up in DNS through dnspython, at the resolver the operator configured
(`dns.nameserver`), or the system's. Verification runs in a thread: dkimpy is blocking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
import logging
import re

import dkim
import dns.exception
import dns.resolver

from ..nameserver import Nameserver
from .verdict import Authenticity, SenderCheck, aligned

log = logging.getLogger("letterbox.email.authenticity")

HOW = "DKIM signature"
# A mail may carry many signatures; each costs a DNS lookup.
MAX_SIGNATURES = 4
_D_TAG = re.compile(rb"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.IGNORECASE)

TxtLookup = Callable[..., bytes | None]


@dataclass(frozen=True, slots=True)
class Resolver:
    """Where DKIM keys are looked up: the connector's DNS server, or None for the system's."""

    nameserver: Nameserver | None = None
    timeout: float = 5.0

    def txt_lookup(self) -> TxtLookup:
        resolver = dns.resolver.Resolver(configure=self.nameserver is None)
        if self.nameserver is not None:
            self.nameserver.configure(resolver)

        def lookup(name: bytes | str, timeout: float = self.timeout) -> bytes | None:
            qname = name.decode("ascii") if isinstance(name, bytes) else name
            try:
                answer = resolver.resolve(qname, "TXT", lifetime=timeout, raise_on_no_answer=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers):
                return None
            except dns.exception.Timeout as e:
                raise dkim.DnsTimeoutError(str(e)) from None
            for rrset in answer.response.answer:
                if rrset.rdtype == dns.rdatatype.TXT:
                    return b"".join(next(iter(rrset)).strings)
            return None

        return lookup


def _signer(signature: bytes) -> str:
    found = _D_TAG.search(b" ".join(signature.split()))
    return found.group(1).decode("ascii", "replace").lower() if found else ""


def verify_dkim(raw: bytes, from_domain: str, lookup: TxtLookup, timeout: float) -> SenderCheck:
    """Check up to MAX_SIGNATURES signatures; verified when one valid signature is aligned."""
    try:
        checker = dkim.DKIM(raw, timeout=int(max(1, timeout)))
        signatures = [v for k, v in checker.headers if k.lower() == b"dkim-signature"]
    except dkim.MessageFormatError as e:
        return SenderCheck(Authenticity.FAILED, HOW, f"the signed mail is malformed ({e})")
    if not signatures:
        return SenderCheck(Authenticity.UNVERIFIED, HOW, "the mail is not signed")
    outcome = SenderCheck(Authenticity.UNVERIFIED, HOW, "it is signed by another domain")
    timed_out = False

    def lookup_noting_timeouts(name: bytes, timeout: float = timeout) -> bytes | None:
        nonlocal timed_out
        try:
            return lookup(name, timeout=timeout)
        except dkim.DnsTimeoutError:
            timed_out = True  # dkimpy reports this as an invalid signature
            raise

    for index, signature in enumerate(signatures[:MAX_SIGNATURES]):
        signer = _signer(signature)
        if not aligned(signer, from_domain):
            continue
        try:
            valid = checker.verify(idx=index, dnsfunc=lookup_noting_timeouts)
        except dkim.DKIMException as e:
            log.debug("DKIM signature %d (d=%s) not verifiable: %s", index, signer, e)
            valid = False
        if timed_out:
            # DNS does not answer: the next signature would wait as long again, and the login's
            # other mail waits behind this one. One timeout per mail at most.
            return SenderCheck(Authenticity.UNVERIFIED, HOW, "its signing key could not be looked up")
        if valid:
            return SenderCheck(Authenticity.VERIFIED, HOW)
        outcome = SenderCheck(Authenticity.FAILED, HOW, "its DKIM signature is invalid")
    return outcome


async def verify_dkim_async(raw: bytes, from_domain: str, resolver: Resolver) -> SenderCheck:
    return await asyncio.to_thread(verify_dkim, raw, from_domain, resolver.txt_lookup(), resolver.timeout)
