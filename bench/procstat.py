"""Memory and CPU figures of processes, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def status_kib(pid: int | str, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM, VmRSS, ...); None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Start VmHWM afresh (Linux >= 4.0: writing 5 to clear_refs); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int | str = "self", *, reaped: bool = False) -> float | None:
    """User + system CPU time of a process so far (with `reaped`: plus that of its children
    it has waited for); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def children(pid: int | str = "self") -> list[int]:
    """Direct child processes of `pid`."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (e.g. a server's workers)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            kids = children(current)
        except FileNotFoundError:
            continue
        out += kids
        todo += kids
    return out


def parser_workers(parent: int | str = "self") -> list[int]:
    """The bridge's mail parser processes (children of `parent`, the bridge process)."""
    return [p for p in children(parent) if "bridge.connectors.email.inbound.worker" in cmdline(p)]


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and all its descendants, live or reaped (a server and its workers)."""
    return sum(c for p in [pid, *descendants(pid)] if (c := cpu_seconds(p, reaped=True)) is not None)
