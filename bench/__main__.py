"""`python -m bench [--quick]`: every measurement of bench/modules.py, one after another, each as
its own process (starting and stopping its own servers), merged into bench/results/latest.json.

A key no module produced is null, with `<key>_note` saying why (module not present, module
failed with its exit status and last output lines, timed out, or not implemented).
"""

from __future__ import annotations

import argparse
from collections import deque
from datetime import UTC, datetime
import json
import os
from pathlib import Path
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from .modules import MEASUREMENTS, NOT_IMPLEMENTED, Measurement, all_keys

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_OUT = BENCH / "results" / "latest.json"
# Whole-run bounds: the issue allows 10 minutes (4 with --quick); keep a margin for start-up.
BUDGET_S = 580.0
QUICK_BUDGET_S = 235.0
TAIL_LINES = 5


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "bridge"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("+changes" if dirty else "")


def _tail(text: str) -> str:
    return " | ".join(line.strip()[:200] for line in text.splitlines())


def _run(m: Measurement, quick: bool, timeout: float, workdir: Path) -> dict[str, Any]:
    """The module's figures, or for each of its keys null with a note."""
    if not (BENCH / f"{m.module}.py").exists():
        return _missing(m, f"module bench/{m.module}.py not present")
    if timeout <= 5:
        return _missing(m, f"not run: the {'quick ' if quick else ''}run's time budget was used up")
    out = workdir / f"{m.module}.json"
    cmd = [sys.executable, "-m", f"bench.{m.module}", "--json-out", str(out)]
    if quick:
        cmd.append("--quick")
    print(f"== bench.{m.module} (at most {timeout:.0f} s)", flush=True)
    started = time.monotonic()
    # Its own session: on a time-out the module gets SIGTERM (it stops its servers), and
    # whatever is left of its process group is killed after a grace period.
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True, errors="replace")
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, stop)
    timer.start()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # shown as it comes, the last lines kept for a failure note
            print(f"   {line}", end="", flush=True)
            if line.strip():
                tail.append(line.rstrip())
        code = proc.wait()
    finally:
        timer.cancel()
    status = None if timed_out.is_set() else code
    elapsed = time.monotonic() - started
    text = "\n".join(tail)
    print(f"== bench.{m.module}: {elapsed:.0f} s, exit status {code}", flush=True)
    if status is None:
        return _missing(m, f"bench.{m.module} timed out after {timeout:.0f} s; last lines: "
                           f"{_tail(text)}")
    if status != 0:
        return _missing(m, f"bench.{m.module} failed with exit status {status}; last lines: "
                           f"{_tail(text)}")
    try:
        figures = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        return _missing(m, f"bench.{m.module} wrote no readable JSON ({exc})")
    if not isinstance(figures, dict):
        return _missing(m, f"bench.{m.module} wrote JSON that is not an object")
    for key in m.keys:
        if key not in figures:
            figures[key] = None
            figures.setdefault(f"{key}_note", f"bench.{m.module} did not report it")
    figures[f"{m.module}_seconds"] = round(elapsed, 1)
    return figures


def _missing(m: Measurement, why: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in m.keys:
        out[key] = None
        out[f"{key}_note"] = why
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smaller counts: the whole run within 4 minutes")
    p.add_argument("--only", action="append", metavar="MODULE",
                   help="run only this module (repeatable); the others' keys are null")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    p.add_argument("--note", default="", help="free text kept in the result (e.g. 'machine busy')")
    args = p.parse_args(argv)
    budget = QUICK_BUDGET_S if args.quick else BUDGET_S
    started = time.monotonic()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if args.note:
        result["note"] = args.note
    with tempfile.TemporaryDirectory(prefix="letterbox-bench-run-") as tmp:
        for m in MEASUREMENTS:
            if args.only and m.module not in args.only:
                result.update(_missing(m, "not run (--only)"))
                continue
            remaining = budget - (time.monotonic() - started)
            bound = min(m.quick_timeout_s if args.quick else m.timeout_s, remaining)
            result.update(_run(m, args.quick, bound, Path(tmp)))
    for key, why in NOT_IMPLEMENTED.items():
        result[key] = None
        result[f"{key}_note"] = why
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    for key in all_keys():
        value = result.get(key)
        print(f"  {key:<24} {'null' if value is None else value}"
              + (f"   ({result[key + '_note']})" if value is None and key + "_note" in result
                 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
