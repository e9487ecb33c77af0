"""Peak memory of the parser worker process for big mails, against the raw mail's size.

Run: `.venv/bin/python -m bench.parser_memory [--quick] [--json-out PATH]`. No servers: a parser
pool of one worker (as the bridge runs it) parses, one at a time,
 * a mail with one 24 MiB attachment (random bytes, base64; ~32 MiB raw, the size cap is raised
   for it), and
 * a 5.6 MB HTML mail (a newsletter-like table, quoted-printable UTF-8),
and for each the worker's peak RSS while it handled the mail (`VmHWM`, reset before the mail
through /proc/<pid>/clear_refs) is read. `parser_peak_ratio` is the worse of the two of
(peak RSS - the idle worker's RSS before the mail) / raw size: the memory one mail costs the
worker, per byte of mail (the interpreter's own ~20-30 MiB is not the mail's). The absolute peaks
are reported too. Then the HTML mail is converted (`convert_email`) and timed against one stdlib
parse of it. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
import os
import time

from bridge.connectors.email.inbound.convert import convert_email
from bridge.connectors.email.inbound.limits import ParseLimits
from bridge.connectors.email.inbound.parse import parse_email_sync
from bridge.connectors.email.inbound.pool import ParserPool

from .output import Figure, output_arguments, write_figures
from .procstat import reset_peak_rss, status_kib

MIB = 1024 * 1024
ATTACHMENT_BYTES = 24 * MIB
HTML_BYTES = 5_600_000
LIMITS = ParseLimits(max_bytes=64 * MIB, time_budget_s=60.0)


def attachment_mail(size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ida <ida@example.org>"
    msg["To"] = "me@example.org"
    msg["Subject"] = "The scans"
    msg["Message-ID"] = "<big-attachment@example.org>"
    msg.set_content("The scans are attached.\n")
    msg.add_attachment(os.urandom(size), maintype="application", subtype="octet-stream",
                       filename="scans.bin")
    return msg.as_bytes()


def html_mail(size: int) -> bytes:
    row = ("<tr><td style=\"padding:4px;font-family:Arial\">Größe {i}</td>"
           "<td><a href=\"https://example.org/item/{i}\">Artikel {i} – jetzt ansehen</a></td>"
           "<td><p>Beschreibung des Artikels {i}, mit Umlauten: äöü ß.</p></td></tr>\n")
    rows, total, i = [], 0, 0
    while total < size * 0.9:
        rows.append(row.format(i=i))
        total += len(rows[-1])
        i += 1
    html = ("<html><head><style>td {color: #333}</style></head><body>"
            "<p>Unser Angebot diese Woche:</p><table>" + "".join(rows) + "</table></body></html>")
    msg = EmailMessage()
    msg["From"] = "Shop <news@example.org>"
    msg["To"] = "me@example.org"
    msg["Subject"] = "Newsletter"
    msg["Message-ID"] = "<big-html@example.org>"
    msg.set_content(html, subtype="html", cte="quoted-printable")
    return msg.as_bytes()


async def _peak(pool: ParserPool, raw: bytes) -> tuple[int, int]:
    """(the idle worker's RSS before, its peak while parsing `raw`), bytes."""
    [pid] = pool.worker_pids()
    if not reset_peak_rss(pid):
        raise RuntimeError("cannot reset the worker's peak RSS (/proc/<pid>/clear_refs)")
    before = status_kib(pid, "VmRSS")
    await pool.parse(raw, LIMITS)
    peak = status_kib(pid, "VmHWM")
    if before is None or peak is None or pool.worker_pids() != [pid]:
        raise RuntimeError("the parser worker was replaced while parsing")
    return before * 1024, peak * 1024


async def _measure(raw: bytes) -> tuple[int, int]:
    """A fresh worker (what an earlier big mail left in its heap would hide the next one)."""
    pool = ParserPool(1)
    try:
        await pool.parse(attachment_mail(1000), LIMITS)  # starts the worker
        return await _peak(pool, raw)
    finally:
        await pool.close()


async def run(quick: bool) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    cases = {"attachment": attachment_mail(ATTACHMENT_BYTES), "html": html_mail(HTML_BYTES)}
    ratios = {}
    for name, raw in cases.items():
        before, peak = await _measure(raw)
        ratios[name] = (peak - before) / len(raw)
        figures[f"parser_peak_{name}_ratio"] = round(ratios[name], 2)
        figures[f"parser_peak_{name}_mib"] = round(peak / MIB, 1)
        figures[f"parser_idle_{name}_mib"] = round(before / MIB, 1)
        print(f"{name:>10} mail: raw {len(raw) / MIB:6.1f} MiB; worker idle "
              f"{before / MIB:5.1f} MiB, peak {peak / MIB:6.1f} MiB; "
              f"(peak - idle) / raw {ratios[name]:.2f}x, peak / raw {peak / len(raw):.2f}x")
    worst = max(ratios, key=lambda k: ratios[k])
    figures["parser_peak_ratio"] = round(ratios[worst], 2)
    figures["parser_peak_ratio_note"] = (
        f"worker peak RSS minus its idle RSS over the raw size; worse of a 24 MiB attachment "
        f"and a 5.6 MB HTML mail ({worst})")
    html = cases["html"]
    repeat = 1 if quick else 3
    parsed = parse_email_sync(html, LIMITS)
    convert_s = min(_timed(lambda: convert_email(parsed, include_subject=True))
                    for _ in range(repeat))
    stdlib_s = min(_timed(lambda: BytesParser(policy=policy.default).parsebytes(html))
                   for _ in range(repeat))
    print(f"html mail: convert_email {convert_s * 1000:.0f} ms, one stdlib parse "
          f"{stdlib_s * 1000:.0f} ms")
    figures["html_convert_ms"] = round(convert_s * 1000, 1)
    figures["html_stdlib_parse_ms"] = round(stdlib_s * 1000, 1)
    return figures


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.parser_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    output_arguments(p)
    args = p.parse_args(argv)
    write_figures(args.json_out, asyncio.run(run(args.quick)))


if __name__ == "__main__":
    main()
