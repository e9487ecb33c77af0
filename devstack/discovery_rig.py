"""What a mail domain publishes for clients, on loopback: a DNS server (dnslib) answering from a
zone the test sets, and the web site of `autoconfig.<domain>` (port 80, like the real thing)."""

from __future__ import annotations

import errno
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import random
import threading
from urllib.parse import urlsplit

from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from .ports import LOOPBACK, free_port


class _Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.records: list[RR] = []
        self.lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname, qtype = request.q.qname, QTYPE[request.q.qtype]
        with self.lock:
            matching = [r for r in self.records if r.rname == qname]
        for record in matching:
            if QTYPE[record.rtype] == qtype:
                reply.add_answer(record)
        if not matching:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class LoopbackDns:
    """`nameserver` ("127.0.0.1:<port>") answers the records set with `set_zone`."""

    def __init__(self) -> None:
        self._zone = _Zone()
        self.port = free_port()
        self._server = DNSServer(self._zone, port=self.port, address=LOOPBACK,
                                 logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))

    @property
    def nameserver(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def set_zone(self, text: str) -> None:
        """Replace all records by those of a zone-file text (absolute names)."""
        records = RR.fromZone(text) if text.strip() else []
        with self._zone.lock:
            self._zone.records = records

    def start(self) -> None:
        self._server.start_thread()

    def stop(self) -> None:
        self._server.stop()
        self._server.server.server_close()


class AutoconfigSite:
    """Serves `documents` (path -> XML) for any host name on port 80 (where mail clients look) of
    `address`, a loopback address of its own (127.x.y.z): test runs side by side do not collide."""

    PORT = 80

    def __init__(self) -> None:
        self.documents: dict[str, bytes] = {}
        self.requests: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                site.requests.append(f"{self.headers.get('Host')}{self.path}")
                body = site.documents.get(urlsplit(self.path).path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self._server = _bind_own_loopback(Handler)
        self.address = str(self._server.server_address[0])
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="autoconfig-site")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _bind_own_loopback(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    for _ in range(20):
        address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        try:
            return ThreadingHTTPServer((address, AutoconfigSite.PORT), handler)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "no free loopback address for port 80")


def autoconfig_xml(domain: str, imap: tuple[str, int, str], smtp: tuple[str, int, str]) -> bytes:
    """A clientConfig 1.1 document; servers as (host, port, socketType)."""
    def server(tag: str, kind: str, spec: tuple[str, int, str]) -> str:
        host, port, socket_type = spec
        return (f'<{tag} type="{kind}"><hostname>{host}</hostname><port>{port}</port>'
                f"<socketType>{socket_type}</socketType><username>%EMAILADDRESS%</username>"
                f"<authentication>password-cleartext</authentication></{tag}>")
    return (f'<?xml version="1.0"?><clientConfig version="1.1"><emailProvider id="{domain}">'
            f"<domain>{domain}</domain>{server('incomingServer', 'imap', imap)}"
            f"{server('outgoingServer', 'smtp', smtp)}</emailProvider></clientConfig>").encode()
