"""Hostile mail bodies: inputs built to make HTML handling and quote detection slow.

Used by the conversion tests (the result must be valid and cut) and by bench.conversion_cost
(how long each takes).
"""

from __future__ import annotations

HOSTILE_HTML = [
    '<div class="gmail_quote">q</div>x' * 7_000,
    '<blockquote type="cite">' * 5_000 + "x" + "</blockquote>" * 5_000,
    "x" + "<div><br></div>" * 100_000,
    "<p>" + "<b>a</b> " * 300_000,
    "<span>" * 20_000 + "deep" + "</span>" * 20_000,
]
HOSTILE_TEXT = [
    "-- \n" * 50_000,
    "On a wrote:\n> q\n" * 11_000,
    "a:\n" * 60_000,
    "x\n" + "> q\n" * 49_000,
]
