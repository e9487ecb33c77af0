"""DKIM for the test rig: a signing key, mails signed with it, and a loopback DNS server
(dnslib) that publishes its public key for any domain, so the bridge verifies signatures for
real (its `network.email.dns.nameserver` points here)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
import logging

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
import dkim
from dnslib import QTYPE, RR, TXT
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

log = logging.getLogger("devstack.dkim")

SELECTOR = "rig"


def _txt_strings(value: str) -> list[str]:
    """A TXT record value in strings of at most 255 characters (RFC 1035)."""
    return [value[i:i + 255] for i in range(0, len(value), 255)]


@dataclass
class _KeyResolver(BaseResolver):  # type: ignore[misc]
    """Answers `<selector>._domainkey.<domain>` TXT queries; `records` overrides per name."""

    default: str
    records: dict[str, str] = field(default_factory=dict)

    def resolve(self, request, handler: DNSHandler):  # type: ignore[no-untyped-def]
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        if request.q.qtype == QTYPE.TXT and "._domainkey." in qname:
            value = self.records.get(qname, self.default)
            if value:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, ttl=60, rdata=TXT(_txt_strings(value))))
        return reply


class DkimRig:
    """Signs mail as any domain and serves the matching key on 127.0.0.1 (UDP)."""

    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        self.record = "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode("ascii")
        self.resolver = _KeyResolver(self.record)
        self._server = DNSServer(self.resolver, port=0, address="127.0.0.1",
                                 logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))

    @property
    def address(self) -> str:
        """`host:port` of the DNS server."""
        host, port = self._server.server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self._server.start_thread()

    def stop(self) -> None:
        self._server.stop()
        self._server.server.server_close()

    def sign(self, raw: bytes, domain: str, selector: str = SELECTOR) -> bytes:
        """`raw` with a DKIM-Signature of `domain` on top (relaxed/relaxed, From, To, Subject ...)."""
        signature = dkim.sign(raw, selector.encode(), domain.encode(), self.private_pem,
                              canonicalize=(b"relaxed", b"relaxed"))
        return signature + raw
