"""Free loopback TCP ports for the servers the rig starts.

The ports are chosen outside the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), where
outgoing connections take their local ports: a listener that is closed and opened again (the
bridge's appservice port across a test session's bridges, a restarted Dovecot) could otherwise
find its port taken by some client connection that happened to get it in between, and stay
unable to listen for as long as that connection lives. The bands of the demo's fixed ports and of
the bridge's default ports are left out too.
"""

from __future__ import annotations

from pathlib import Path
import random
import socket

LOOPBACK = "127.0.0.1"
# The demo's fixed ports (devstack/__main__.py) and the bridge's defaults (29400-29402).
_RESERVED = (range(20000, 21000), range(28000, 30000))
_LOWEST = 10000
_EPHEMERAL_DEFAULT = (32768, 60999)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _EPHEMERAL_DEFAULT


def _candidates() -> list[int]:
    low, high = _ephemeral_range()
    ports = [p for p in range(_LOWEST, 65536)
             if not low <= p <= high and not any(p in band for band in _RESERVED)]
    random.SystemRandom().shuffle(ports)
    return ports


def free_ports(count: int) -> list[int]:
    """Return `count` distinct TCP ports that are free on 127.0.0.1 right now.

    All sockets are held open until every port is chosen, so the ports are distinct. Another
    program that picks ports the same way may still bind one before the caller does; the random
    choice over the ~20,000 candidates makes that rare.
    """
    socks: list[socket.socket] = []
    try:
        for port in _candidates():
            if len(socks) == count:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < count:
            raise OSError(f"fewer than {count} free loopback ports outside the ephemeral range")
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """Return one free TCP port on 127.0.0.1."""
    return free_ports(1)[0]


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
