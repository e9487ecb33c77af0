"""The tests' own Matrix HTML validator (tests/helpers/matrix_html.py) catches what it should."""

from __future__ import annotations

import pytest

from tests.helpers.matrix_html import EVENT_LIMIT, check_content, html_problems


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
