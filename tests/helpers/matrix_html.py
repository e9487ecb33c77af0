"""An independent Matrix HTML allow-list validator for the inbound tests.

`check_content` and `html_problems` are used by the inbound tests; tests/test_matrix_html_validator.py
makes sure the validator itself catches what it should.
"""

from __future__ import annotations

from html.parser import HTMLParser
import json
import re
from typing import Any

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
