"""Parser worker process: reads framed jobs on stdin, writes framed results on stdout.

Started by `pool.ParserPool` (see its bootstrap) with the address-space limit as argument.
A frame is a 4-byte big-endian length followed by a pickle. A job is a frame
`(ParseLimits, size, spool_dir)` followed by `size` bytes of raw mail (not pickled: no copy on
either side); results are `("ok", ParsedEmail)` (without `raw`, which the parent already has; a
big attachment's content is in a file of `spool_dir`, `Attachment.path`), `("spooled", path)`
(that result pickled into a file of `spool_dir`, for a mail with much text) or `("rejected",
reason)`. Unexpected errors are logged to stderr by `parse_email_sync`.
"""

from __future__ import annotations

import os
from pathlib import Path
import pickle
import struct
import sys
from typing import BinaryIO

_HEADER = struct.Struct(">I")
# A result with more text than this goes back as a file (`("spooled", path)`).
_BIG_RESULT_CHARS = 256 * 1024


def read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def write_frame(stream: BinaryIO, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
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
        limits, size, spool_dir = pickle.loads(frame)
        raw = source.read(size)
        if len(raw) != size:
            return 0
        try:
            parsed = parse_email_sync(raw, limits, spool_dir=Path(spool_dir))
        except MailRejected as exc:
            write_frame(out, ("rejected", exc.reason))
            continue
        finally:
            del raw  # the parent has the mail; what is left of it here need not wait for the next
        parsed.raw = b""
        if len(parsed.html) + len(parsed.text) > _BIG_RESULT_CHARS:
            # Pickled straight into a file: no second copy of the text in a pickle buffer.
            path = Path(spool_dir, "result.pickle")
            with path.open("wb") as sink:
                pickle.dump(("ok", parsed), sink, protocol=pickle.HIGHEST_PROTOCOL)
            write_frame(out, ("spooled", str(path)))
        else:
            write_frame(out, ("ok", parsed))
        del parsed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
