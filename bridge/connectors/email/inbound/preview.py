"""What the bridge would post for a mail file, without a homeserver (`python -m bridge preview`)."""

from __future__ import annotations

import argparse
import asyncio
from email import policy
from email.parser import BytesHeaderParser
import json
from pathlib import Path
import sys
from typing import Any

from ....network.placeholders import referenced_keys
from .convert import ConvertedEmail, convert_email, convert_rejected
from .headers import mailboxes, raw_headers
from .limits import MailRejected, ParseLimits
from .parse import parse_email
from .pool import ParserPool, close_default_pool


def _sniff_sender(raw: bytes, limits: ParseLimits) -> str | None:
    """Best-effort From address of a mail that could not be parsed (headers only, capped)."""
    try:
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(
            raw[: limits.max_header_bytes]
        )
        found = mailboxes(raw_headers(headers).get("from"))
    except (ValueError, TypeError, LookupError, RecursionError):
        return None
    return found[0].addr if found else None


def _objects(
    converted: ConvertedEmail, sender: str | None, thread_root: str | None, reply_to: str | None
) -> list[dict[str, Any]]:
    objects = []
    for draft in converted.events:
        attachments = [
            {"filename": a.filename, "mimetype": a.mimetype, "size": len(a.data)}
            for key in referenced_keys(draft.content)
            if (a := converted.uploads.get(key)) is not None
        ]
        objects.append(
            {
                "type": draft.type,
                "content": draft.content,
                "sender": sender,
                "thread_root": thread_root,
                "reply_to": reply_to,
                "attachments": attachments,
            }
        )
    return objects


async def preview(
    raw: bytes, *, limits: ParseLimits | None = None, pool: ParserPool | None = None
) -> list[dict[str, Any]]:
    """JSON-ready events for `raw`, exactly as they would be sent (placeholders left in place)."""
    limits = limits or ParseLimits()
    try:
        parsed = await parse_email(raw, limits, pool=pool)
    except MailRejected as exc:
        return _objects(convert_rejected(raw, exc.reason), _sniff_sender(raw, limits), None, None)
    starts_thread = parsed.in_reply_to is None and not parsed.references
    converted = convert_email(parsed, include_subject=starts_thread)
    thread_root = parsed.references[0] if parsed.references else None
    return _objects(converted, parsed.sender.addr, thread_root, parsed.in_reply_to)


def _human(objects: list[dict[str, Any]]) -> str:
    lines = []
    for obj in objects:
        content = obj["content"]
        lines.append(f"[{content.get('msgtype', obj['type'])}] from {obj['sender']}")
        if obj["thread_root"] or obj["reply_to"]:
            lines.append(f"  thread root: {obj['thread_root']}  in reply to: {obj['reply_to']}")
        lines.extend("  " + line for line in str(content.get("body", "")).splitlines())
        for attachment in obj["attachments"]:
            name, mimetype, size = (
                attachment["filename"],
                attachment["mimetype"],
                attachment["size"],
            )
            lines.append(f"  attachment: {name} ({mimetype}, {size} bytes)")
    return "\n".join(lines)


async def _run(raw: bytes) -> list[dict[str, Any]]:
    try:
        return await preview(raw)
    finally:
        await close_default_pool()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="preview", description="Show the Matrix events for an email file."
    )
    parser.add_argument("file", type=Path, help="an RFC 5322 message (.eml)")
    parser.add_argument("--json", action="store_true", help="print the events as JSON")
    args = parser.parse_args(argv)
    try:
        raw = args.file.read_bytes()
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    objects = asyncio.run(_run(raw))
    if args.json:
        print(json.dumps(objects, ensure_ascii=False, indent=2))
    else:
        print(_human(objects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
