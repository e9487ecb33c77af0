"""Shared checks for the inbound tests: an independent Matrix HTML allow-list validator.

Other `test_inbound_*` modules import `check_content` and `html_problems` from here; the tests at
the bottom make sure the validator itself catches what it should.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest

# Written out again from the client-server spec (m.room.message, "HTML"), independently of the
# sanitiser's own constants, so a mistake there cannot hide itself.
SPEC_TAGS = {
    "font", "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol", "sup",
    "sub", "li", "b", "i", "u", "strong", "em", "s", "code", "hr", "br", "div", "table", "thead",
    "tbody", "tr", "th", "td", "caption", "pre", "span", "img", "details", "summary",
}  # fmt: skip
SPEC_ATTRIBUTES = {
    "font": {"data-mx-bg-color", "data-mx-color", "color"},
    "span": {"data-mx-bg-color", "data-mx-color", "data-mx-spoiler", "data-mx-maths"},
    "div": {"data-mx-maths"},
    "a": {"target", "href"},
    "img": {"width", "height", "alt", "title", "src"},
    "ol": {"start"},
    "code": {"class"},
}
SPEC_LINK_SCHEMES = {"http", "https", "ftp", "mailto", "magnet"}
EVENT_LIMIT = 64 * 1024


class _Validator(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in SPEC_TAGS:
            self.problems.append(f"tag <{tag}>")
            return
        for name, value in attrs:
            if name not in SPEC_ATTRIBUTES.get(tag, set()):
                self.problems.append(f"attribute {name} on <{tag}>")
            elif tag == "a" and name == "href":
                scheme = (value or "").split(":", 1)[0].lower()
                if ":" not in (value or "") or scheme not in SPEC_LINK_SCHEMES:
                    self.problems.append(f"link {value!r}")
            elif tag == "img" and name == "src" and not (value or "").startswith("mxc://"):
                self.problems.append(f"image source {value!r}")
            elif (
                tag == "code"
                and name == "class"
                and not all(c.startswith("language-") for c in (value or "").split())
            ):
                self.problems.append(f"code class {value!r}")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag not in SPEC_TAGS:
            self.problems.append(f"end tag </{tag}>")


def html_problems(html: str) -> list[str]:
    """Everything in `html` outside the spec's allow-list (empty list: valid)."""
    validator = _Validator()
    validator.feed(html)
    validator.close()
    problems = validator.problems
    lowered = html.lower()
    if "<script" in lowered:
        problems.append("<script> present")
    if "javascript:" in lowered:
        problems.append("javascript: URL present")
    if re.search(r"<[^>]*\son[a-z]+\s*=", lowered):
        problems.append("on* event handler attribute present")
    return problems


def check_content(content: dict[str, Any]) -> None:
    """Assert one event's content is well-formed, allow-listed and under the size limit."""
    assert isinstance(content.get("body"), str)
    assert content.get("m.mentions") == {}
    assert isinstance(content.get("msgtype"), str) and content["msgtype"].startswith("m.")
    if "formatted_body" in content:
        assert content.get("format") == "org.matrix.custom.html"
        assert isinstance(content["formatted_body"], str)
        assert html_problems(content["formatted_body"]) == []
    size = len(json.dumps(content, ensure_ascii=False).encode("utf-8"))
    assert size < EVENT_LIMIT, f"event content is {size} bytes"


def test_validator_accepts_spec_html() -> None:
    html = (
        '<p><strong>Hi</strong> <a href="https://example.org/x">link</a></p>'
        '<img src="mxc://example.org/abc" alt="a" width="10"><ol start="3"><li>x</li></ol>'
        '<code class="language-python">1</code><details><summary>s</summary>q</details>'
    )
    assert html_problems(html) == []


def test_validator_rejects_what_the_spec_does_not_allow() -> None:
    problems = html_problems(
        '<script>x</script><p style="color:red" onclick="x()">t</p><a href="javascript:alert(1)">j</a>'
        '<img src="https://tracker.example/p.gif"><a href="/relative">r</a><iframe></iframe>'
    )
    joined = " | ".join(problems)
    for expected in (
        "tag <script>",
        "attribute style on <p>",
        "attribute onclick on <p>",
        "link 'javascript:alert(1)'",
        "image source",
        "link '/relative'",
        "tag <iframe>",
        "<script> present",
        "javascript: URL present",
        "on* event handler",
    ):
        assert expected in joined, expected


def test_check_content_enforces_size_and_mentions() -> None:
    check_content({"msgtype": "m.text", "body": "hi", "m.mentions": {}})
    with pytest.raises(AssertionError):
        check_content({"msgtype": "m.text", "body": "x" * EVENT_LIMIT, "m.mentions": {}})
    with pytest.raises(AssertionError):
        check_content({"msgtype": "m.text", "body": "hi"})
