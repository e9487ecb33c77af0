"""Mozilla's autoconfig XML (clientConfig, version 1.1): the IMAP and SMTP servers it names."""

from __future__ import annotations

from dataclasses import dataclass

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from ..servers import ServerSpec

_SOCKET = {"SSL": "tls", "STARTTLS": "starttls", "plain": "plain"}


@dataclass(frozen=True, slots=True)
class AutoconfigServers:
    imap: ServerSpec | None
    smtp: ServerSpec | None
    oauth: bool  # the provider offers OAuth2 sign-in


def _server(node: object, address: str) -> ServerSpec | None:
    get = node.findtext  # type: ignore[attr-defined]
    host = (get("hostname") or "").strip()
    security = _SOCKET.get((get("socketType") or "").strip())
    try:
        port = int((get("port") or "").strip())
    except ValueError:
        return None
    if not host or security is None or not 0 < port < 65536:
        return None
    _local, _, domain = address.partition("@")
    host = host.replace("%EMAILDOMAIN%", domain)
    if any(c in host for c in "%/ @"):
        return None
    return ServerSpec(host.lower(), port, security)


def parse_autoconfig(xml: bytes, address: str) -> AutoconfigServers | None:
    """The first usable IMAP and SMTP server of the document; None if it is not one."""
    try:
        root = ElementTree.fromstring(xml)
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        return None
    provider = root.find("emailProvider")
    if root.tag != "clientConfig" or provider is None:
        return None
    imap = next((s for n in provider.findall("incomingServer[@type='imap']")
                 if (s := _server(n, address)) is not None), None)
    smtp = next((s for n in provider.findall("outgoingServer[@type='smtp']")
                 if (s := _server(n, address)) is not None), None)
    oauth = any((a.text or "").strip() == "OAuth2" for a in provider.iter("authentication"))
    if imap is None and smtp is None:
        return None
    return AutoconfigServers(imap, smtp, oauth)
