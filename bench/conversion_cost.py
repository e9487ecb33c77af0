"""Cost of turning one mail into Matrix events (parse + convert), no servers involved.

Run: `.venv/bin/python -m bench.conversion_cost [--repeat 3]`. Prints, per hostile input (built to
make HTML handling and quote detection slow, tests/helpers/hostile_mail.py) the time to convert
it, and for the corpus (tests/corpus) the median and slowest messages through the parser worker
pool, each against its budget. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
import statistics
import time

from bridge.connectors.email.addresses import Mailbox
from bridge.connectors.email.inbound.convert import convert_email
from bridge.connectors.email.inbound.model import ParsedEmail
from bridge.connectors.email.inbound.pool import ParserPool
from bridge.connectors.email.inbound.preview import preview
from tests.helpers.hostile_mail import HOSTILE_HTML, HOSTILE_TEXT

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus"
# The conversion runs in the event loop: beyond this a hostile mail stalls every other room.
HOSTILE_BUDGET_S = 3.0
# The parser worker gives up on a mail after 5 s (ParseLimits); parse + convert should stay well below.
MESSAGE_BUDGET_S = 5.0


def _hostile(repeat: int) -> None:
    print(f"hostile inputs (convert_email, best of {repeat}; budget {HOSTILE_BUDGET_S:.1f} s)")
    cases = [("html", h) for h in HOSTILE_HTML] + [("text", t) for t in HOSTILE_TEXT]
    for kind, body in cases:
        mail = ParsedEmail(message_id="<bench@example.org>", in_reply_to=None, references=[],
                           subject="hostile", sender=Mailbox("mallory@example.org"),
                           **{kind: body})
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            convert_email(mail, include_subject=True)
            times.append(time.perf_counter() - started)
        label = f"{kind} {body[:28]!r}… ({len(body):,} chars)"
        flag = "" if min(times) < HOSTILE_BUDGET_S else "   OVER BUDGET"
        print(f"  {label:<62} {min(times):6.2f} s{flag}")


async def _corpus() -> None:
    messages = sorted(CORPUS.glob("*/*.eml"))
    pool = ParserPool(2)
    timings: list[tuple[float, str]] = []
    try:
        for path in messages:
            started = time.perf_counter()
            await preview(path.read_bytes(), pool=pool)
            timings.append((time.perf_counter() - started, path.relative_to(CORPUS).as_posix()))
    finally:
        await pool.close()
    seconds = [t for t, _ in timings]
    print(f"corpus ({len(timings)} mails through the parser pool and convert; budget "
          f"{MESSAGE_BUDGET_S:.1f} s each)")
    print(f"  median {statistics.median(seconds) * 1000:.1f} ms, total {sum(seconds):.1f} s, "
          f"over budget: {sum(t >= MESSAGE_BUDGET_S for t in seconds)}")
    for elapsed, name in sorted(timings, reverse=True)[:5]:
        print(f"  {elapsed * 1000:8.1f} ms  {name}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.conversion_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="runs per hostile input (best is shown)")
    args = p.parse_args(argv)
    _hostile(args.repeat)
    asyncio.run(_corpus())


if __name__ == "__main__":
    main()
