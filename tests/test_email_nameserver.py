"""The DNS server setting shared by DKIM key lookups and server discovery."""

from __future__ import annotations

import pytest

from bridge.connectors.email.nameserver import Nameserver


@pytest.mark.parametrize(("text", "host", "port"), [
    ("127.0.0.1", "127.0.0.1", 53), ("127.0.0.1:5353", "127.0.0.1", 5353),
    ("resolver.lan", "resolver.lan", 53), ("[::1]:5353", "::1", 5353), ("::1", "::1", 53),
])
def test_nameserver_is_host_or_host_and_port(text: str, host: str, port: int) -> None:
    assert Nameserver.parse(text) == Nameserver(host, port)


@pytest.mark.parametrize("text", ["", ":53", "host:0", "host:99999", "host:port", "[::1]x", "a:b:c"])
def test_nameserver_refuses_what_is_not_host_or_host_and_port(text: str) -> None:
    with pytest.raises(ValueError):
        Nameserver.parse(text)
