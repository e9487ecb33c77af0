"""Parser worker process: reads framed jobs on stdin, writes framed results on stdout.

Started by `pool.ParserPool` (see its bootstrap) with the address-space limit as argument.
A frame is a 4-byte big-endian length followed by a pickle. Jobs are `(ParseLimits, bytes)`;
results are `("ok", ParsedEmail)` (without `raw`, which the parent already has) or
`("rejected", reason)`. Unexpected errors are logged to stderr by `parse_email_sync`.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from typing import BinaryIO

_HEADER = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def write_frame(stream: BinaryIO, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _limit_memory(limit: int) -> None:
    if limit <= 0:
        return
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str]) -> int:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    # Nothing but frames may reach the parent on stdout.
    sys.stdout = sys.stderr
    _limit_memory(int(argv[0]) if argv else 0)

    from .limits import MailRejected
    from .parse import parse_email_sync

    source = sys.stdin.buffer
    write_frame(out, ("ready", None))
    while True:
        frame = read_frame(source)
        if frame is None:
            return 0
        limits, raw = pickle.loads(frame)
        try:
            parsed = parse_email_sync(raw, limits)
        except MailRejected as exc:
            write_frame(out, ("rejected", exc.reason))
            continue
        parsed.raw = b""
        write_frame(out, ("ok", parsed))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
