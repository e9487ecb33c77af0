"""The `help` answer: commands grouped, each with its arguments, as plain text and HTML."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
import html


@dataclass(frozen=True, slots=True)
class HelpEntry:
    group: str
    usage: str
    text: str


def render_help(entries: Iterable[HelpEntry], groups: tuple[str, ...], prefix: str
                ) -> tuple[str, str]:
    """(plain text, HTML) of the help, groups in the order given."""
    by_group: dict[str, list[HelpEntry]] = {g: [] for g in groups}
    for entry in entries:
        by_group.setdefault(entry.group, []).append(entry)
    intro = ("In a private chat with me, send a command as it is; in any other room, "
             f"start it with {prefix}.")
    plain = [intro]
    rich = [f"<p>{html.escape(intro)}</p>"]
    for group, items in by_group.items():
        if not items:
            continue
        plain.append(f"\n{group}:")
        rich.append(f"<h4>{html.escape(group)}</h4><ul>")
        for e in items:
            plain.append(f"• {e.usage} — {e.text}")
            rich.append(f"<li><code>{html.escape(e.usage)}</code> — {html.escape(e.text)}</li>")
        rich.append("</ul>")
    return "\n".join(plain), "".join(rich)
