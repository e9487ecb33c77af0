"""Tokens and the verdict on what arrived: lost, duplicated, out of order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
import re
import secrets

_TOKEN = re.compile(r"\b(?:ft|att|sentinel)-[0-9a-f]{8}-\d+\b")


@dataclass(frozen=True, slots=True)
class Tokens:
    """Unique tokens of one scenario run: `ft-<run>-<i>` in message text, `att-<run>-<i>` in file
    names, `sentinel-<run>-<i>` in the barrier messages that follow the faults."""

    run: str

    @classmethod
    def fresh(cls) -> Tokens:
        return cls(secrets.token_hex(4))

    def text(self, i: int) -> str:
        return f"ft-{self.run}-{i}"

    def file(self, i: int) -> str:
        return f"att-{self.run}-{i}"

    def sentinel(self, i: int) -> str:
        return f"sentinel-{self.run}-{i}"

    def texts(self, count: int) -> list[str]:
        return [self.text(i) for i in range(count)]

    def files(self, count: int) -> list[str]:
        return [self.file(i) for i in range(count)]

    def found_in(self, text: str, kind: str) -> list[str]:
        """The tokens of this run and `kind` (ft, att, sentinel) in `text`."""
        prefix = f"{kind}-{self.run}-"
        return [t for t in _TOKEN.findall(text) if t.startswith(prefix)]


@dataclass(slots=True)
class Verdict:
    """What one side received, checked against what was sent (in the order it should arrive)."""

    what: str
    expected: int
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)  # token -> extra copies
    order_breaks: list[tuple[str, str]] = field(default_factory=list)  # (came first, should have)
    allowed: dict[str, int] = field(default_factory=dict)  # extra copies the check tolerates, why in `note`
    note: str = ""

    @classmethod
    def judge(cls, what: str, expected: list[str], observed: Iterable[str], *,
              check_order: bool = True, allowed_extra: dict[str, int] | None = None,
              note: str = "") -> Verdict:
        """`observed`: every copy seen, in arrival order (tokens of other runs are ignored)."""
        wanted = {t: i for i, t in enumerate(expected)}
        seen = [t for t in observed if t in wanted]
        counts = Counter(seen)
        allowed_extra = allowed_extra or {}
        verdict = cls(what, len(expected), note=note)
        verdict.lost = [t for t in expected if counts[t] == 0]
        for token, n in counts.items():
            extra = n - 1 - allowed_extra.get(token, 0)
            if extra > 0:
                verdict.duplicated[token] = extra
            elif n > 1:
                verdict.allowed[token] = n - 1
        if check_order:
            firsts = list(dict.fromkeys(seen))
            latest = -1
            for token in firsts:
                pos = wanted[token]
                if pos < latest:
                    verdict.order_breaks.append((expected[latest], token))
                latest = max(latest, pos)
        return verdict

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.order_breaks)

    def line(self) -> str:
        extra = sum(self.duplicated.values())
        text = (f"{self.what}: {self.expected} sent, {len(self.lost)} lost, {extra} duplicated, "
                f"{len(self.order_breaks)} out of order")
        if self.allowed:
            text += f", {sum(self.allowed.values())} tolerated copies ({self.note})"
        return text

    def details(self, limit: int = 5) -> str:
        parts = []
        if self.lost:
            parts.append(f"lost e.g. {self.lost[:limit]}")
        if self.duplicated:
            parts.append(f"duplicated e.g. {list(self.duplicated.items())[:limit]}")
        if self.order_breaks:
            parts.append(f"out of order e.g. {self.order_breaks[:limit]}")
        return "; ".join(parts)


@dataclass(slots=True)
class Outcome:
    """One scenario run: its verdicts and the facts of the run (faults injected, timings)."""

    scenario: str
    verdicts: list[Verdict] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # checks that are not about tokens

    @property
    def clean(self) -> bool:
        return all(v.clean for v in self.verdicts) and not self.problems

    def report(self) -> str:
        lines = [f"{self.scenario}: {'OK' if self.clean else 'FAILED'}"]
        facts = ", ".join(f"{k} {v}" for k, v in self.facts.items())
        if facts:
            lines.append(f"  faults and figures: {facts}")
        for verdict in self.verdicts:
            lines.append(f"  {verdict.line()}")
            if not verdict.clean:
                lines.append(f"    {verdict.details()}")
        lines.extend(f"  problem: {p}" for p in self.problems)
        return "\n".join(lines)
