"""IMAP folder-name encoding: modified UTF-7 (RFC 3501 section 5.1.3).

Hand-written: the maintained codecs for it live inside whole IMAP client libraries (imapclient,
imap-tools), a second client beside aioimaplib for forty lines; Python's "utf-7" codec is the
unmodified RFC 2152 form ("+" instead of "&", "/" instead of ",").
"""

from __future__ import annotations

import base64
import binascii


def encode(name: str) -> str:
    """Unicode folder name -> the ASCII form used on the wire."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be")
            b64 = base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",")
            out.append(f"&{b64}-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode(wire: str) -> str:
    """Wire folder name -> Unicode. Malformed shift sequences are kept as they are."""
    out: list[str] = []
    i = 0
    while i < len(wire):
        ch = wire[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = wire.find("-", i + 1)
        if end < 0:
            out.append(wire[i:])
            break
        chunk = wire[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                out.append(base64.b64decode(b64, validate=True).decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError):
                out.append(wire[i : end + 1])
        i = end + 1
    return "".join(out)
