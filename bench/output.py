"""The options every measurement module takes for `python -m bench`, and its JSON result."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

Figure = float | int | str | None


def output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="smaller counts, for `python -m bench --quick`")
    parser.add_argument("--json-out", type=Path, metavar="PATH",
                        help="also write the figures as one flat JSON object to PATH")


def write_figures(path: Path | None, figures: dict[str, Figure]) -> None:
    """Write `figures` (numbers, None, or `<key>_note` strings) to `path` if one was given;
    a number that is not finite (a ratio over a zero baseline) is written as null."""
    if path is None:
        return
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in figures.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
