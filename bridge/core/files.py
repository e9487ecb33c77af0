"""Files the bridge writes that may hold secrets or private data: created readable by the owner only."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_MODE = 0o600


def private_file(path: str | os.PathLike[str]) -> Path:
    """Create `path` (if missing) with mode 0600, and make an existing file 0600 too.

    Used before a library opens the file (SQLite, a log handler), so the file is never
    readable by others, not even for the moment between its creation and a chmod.
    """
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
    finally:
        os.close(fd)
    return target


def private_sqlite(path: str) -> None:
    """The SQLite database and its side files (existing ones from an older start included).

    SQLite creates -wal, -shm and -journal files with the mode of the database file."""
    if path in ("", ":memory:"):
        return
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        side = Path(path + suffix)
        if side.exists():
            side.chmod(PRIVATE_MODE)
