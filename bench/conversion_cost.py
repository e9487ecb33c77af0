"""Cost of turning one mail into Matrix events (parse + convert), no servers involved.

Run: `.venv/bin/python -m bench.conversion_cost [--repeat 3] [--quick] [--json-out PATH]`
(`--quick`: only the comparison with the stdlib, best of 2).
Prints, per hostile input (built to make HTML handling and quote detection slow,
tests/helpers/hostile_mail.py) the time to convert it, and for the corpus (tests/corpus):
 * the bridge's conversion of each mail (`parse_email_sync` + `convert_email`, in this process)
   against a bare stdlib parse of the same mail (`BytesParser(policy=default)` and the
   content of every leaf part: what a client on the stdlib alone does), and against the stdlib's
   share of the bridge's own parse (`compat32` and the decoded payloads), best of `--repeat` each; `conversion_ratio` is the sum of the
   one over the sum of the other;
 * the median and slowest mails through the parser worker pool (parse in a worker + convert),
   against the worker's budget.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
import statistics
import time

from bridge.connectors.email.addresses import Mailbox
from bridge.connectors.email.inbound.convert import convert_email
from bridge.connectors.email.inbound.limits import MailRejected
from bridge.connectors.email.inbound.model import ParsedEmail
from bridge.connectors.email.inbound.parse import parse_email_sync
from bridge.connectors.email.inbound.pool import ParserPool
from bridge.connectors.email.inbound.preview import preview
from tests.helpers.hostile_mail import HOSTILE_HTML, HOSTILE_TEXT

from .output import Figure, output_arguments, write_figures

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


def _convert(raw: bytes) -> None:
    try:
        convert_email(parse_email_sync(raw), include_subject=True)
    except MailRejected:
        pass  # a rejected mail costs its parse; the notice for it is trivial


def _stdlib(raw: bytes) -> None:
    """What a client written on the stdlib alone does at least: parse (`policy.default`) and
    decode the content of every leaf part."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    for part in msg.walk():
        if part.is_multipart():
            continue
        try:
            part.get_content()
        except (LookupError, ValueError, TypeError, AttributeError, KeyError):
            part.get_payload(decode=True)


def _stdlib_compat32(raw: bytes) -> None:
    """The stdlib's share of the bridge's own parse: `compat32` (as the bridge's parser runs
    it), and the transfer-decoded payload of every leaf part."""
    msg = BytesParser(policy=policy.compat32).parsebytes(raw)
    for part in msg.walk():
        if not part.is_multipart():
            part.get_payload(decode=True)


def _best(fn: Callable[[bytes], None], raw: bytes, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn(raw)
        best = min(best, time.perf_counter() - started)
    return best


def _against_stdlib(messages: list[Path], repeat: int) -> tuple[float, float]:
    ours, theirs, compat = [], [], []
    for path in messages:
        raw = path.read_bytes()
        ours.append(_best(_convert, raw, repeat))
        theirs.append(_best(_stdlib, raw, repeat))
        compat.append(_best(_stdlib_compat32, raw, repeat))
    ratio, ratio_compat = sum(ours) / sum(theirs), sum(ours) / sum(compat)
    print(f"corpus ({len(messages)} mails, in this process, best of {repeat} each)")
    for label, series in (("bridge parse + convert", ours),
                          ("baseline stdlib, policy.default + get_content", theirs),
                          ("stdlib compat32 + decoded payloads", compat)):
        print(f"  {label:<46} total {sum(series) * 1000:6.0f} ms, "
              f"median {statistics.median(series) * 1000:5.2f} ms")
    per_mail = statistics.median(o / t for o, t in zip(ours, theirs, strict=True))
    print(f"  ratio bridge / stdlib (default): {ratio:.2f}x of the totals "
          f"(median per mail {per_mail:.2f}x); "
          f"bridge / compat32: {ratio_compat:.2f}x")
    return ratio, ratio_compat


async def _corpus(messages: list[Path]) -> None:
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
    p.add_argument("--repeat", type=int, default=None,
                   help="runs per input, the best counts (default: corpus 3, 2 with --quick; "
                        "hostile inputs 1)")
    output_arguments(p)
    args = p.parse_args(argv)
    repeat = args.repeat or (2 if args.quick else 3)
    messages = sorted(CORPUS.glob("*/*.eml"))
    if not args.quick:  # figures against budgets, not part of the JSON; slow, once by default
        _hostile(args.repeat or 1)
    ratio, ratio_compat = _against_stdlib(messages, repeat)
    if not args.quick:
        asyncio.run(_corpus(messages))
    figures: dict[str, Figure] = {
        "conversion_ratio": round(ratio, 3),
        "conversion_ratio_note": f"parse + convert of {len(messages)} corpus mails over a bare "
                                 f"stdlib parse (policy.default, get_content of every leaf) of "
                                 f"the same mails, totals, best of {repeat} each",
        "conversion_ratio_compat32": round(ratio_compat, 3),
    }
    write_figures(args.json_out, figures)


if __name__ == "__main__":
    main()
