"""Matrix message content -> text/plain + text/html mail body."""

from __future__ import annotations

import pytest

from bridge.connectors.email.html_text import MAX_MARKED_DEPTH
from bridge.connectors.email.outbound import (
    MailBody,
    UnsupportedContent,
    html_to_text,
    matrix_to_mail_body,
)

NAMES = {"@alice:example.org": "Alice Liddell", "@bob:example.org": "Bob"}


def convert(content: dict, sender: str | None = None) -> MailBody:
    return matrix_to_mail_body(content, mention_name=NAMES.get, sender=sender)


def html_body(fragment: str, body: str = "") -> dict:
    return {
        "msgtype": "m.text",
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": fragment,
    }


def test_plain_body_stays_plain() -> None:
    result = convert({"msgtype": "m.text", "body": "Hello,\nsee you <b>tomorrow</b> & bring 3 < 4"})
    assert result == MailBody(text="Hello,\nsee you <b>tomorrow</b> & bring 3 < 4", html=None)


def test_markdown_body_is_rendered() -> None:
    result = convert(
        {"msgtype": "m.text", "body": "# Plan\n\n- **one**\n- two <script>x</script>\n\n`a<b`"}
    )
    assert result.text.startswith("# Plan")
    assert result.html is not None
    assert "<h1>Plan</h1>" in result.html
    assert "<li><strong>one</strong></li>" in result.html
    # raw HTML typed by the user is shown, never interpreted
    assert "<script>" not in result.html and "&lt;script&gt;" in result.html
    assert "<code>a&lt;b</code>" in result.html


def test_html_part_is_a_complete_document() -> None:
    result = convert(html_body("<p>hi</p>", "hi"))
    assert result.html is not None
    assert result.html.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in result.html
    assert "<body>\n<p>hi</p>\n</body>" in result.html
    assert result.html.rstrip().endswith("</html>")


def test_pill_becomes_display_name() -> None:
    content = html_body(
        '<a href="https://matrix.to/#/@alice:example.org">Alice (Matrix)</a>: look',
        "Alice (Matrix): look",
    )
    content["m.mentions"] = {"user_ids": ["@alice:example.org"]}
    result = convert(content)
    assert result.html is not None
    assert "Alice Liddell: look" in result.html
    assert "matrix.to" not in result.html and "<a" not in result.html


def test_pill_without_known_name_keeps_link_text() -> None:
    result = convert(html_body('hi <a href="https://matrix.to/#/%40zed%3Aexample.org">Zed</a>!'))
    assert result.html is not None and "hi Zed!" in result.html
    assert result.text == "hi Zed!"


def test_mentions_in_plain_body_use_display_names() -> None:
    content = {
        "msgtype": "m.text",
        "body": (
            "@alice:example.org and @bob:example.org, and @eve:example.org. Bye @bob:example.org."
        ),
        "m.mentions": {"user_ids": ["@alice:example.org", "@bob:example.org"]},
    }
    assert convert(content).text == "Alice Liddell and Bob, and @eve:example.org. Bye Bob."


def test_emote() -> None:
    result = convert({"msgtype": "m.emote", "body": "waves"}, sender="@alice:example.org")
    assert result.text == "* Alice Liddell waves"
    unknown = convert({"msgtype": "m.emote", "body": "waves"}, sender="@zed:example.org")
    assert unknown.text == "* zed waves"


def test_emote_with_html() -> None:
    result = convert(
        {
            "msgtype": "m.emote",
            "body": "waves *hard*",
            "format": "org.matrix.custom.html",
            "formatted_body": "waves <em>hard</em>",
        },
        sender="@bob:example.org",
    )
    assert result.text == "* Bob waves *hard*"
    assert result.html is not None and "* Bob waves <em>hard</em>" in result.html


def test_notice_is_like_text() -> None:
    assert convert({"msgtype": "m.notice", "body": "build ok"}).text == "build ok"


def test_reply_fallback_is_dropped() -> None:
    content = {
        "msgtype": "m.text",
        "body": "> <@bob:example.org> Are you coming?\n> second line\n\nYes!",
        "format": "org.matrix.custom.html",
        "formatted_body": (
            "<mx-reply><blockquote>"
            '<a href="https://matrix.to/#/!room:example.org/$ev">In reply to</a> '
            '<a href="https://matrix.to/#/@bob:example.org">@bob:example.org</a><br>Are you coming?'
            "</blockquote></mx-reply>Yes!"
        ),
        "m.relates_to": {"m.in_reply_to": {"event_id": "$ev"}},
    }
    result = convert(content)
    assert result.text == "Yes!"
    assert result.html is not None
    assert "Are you coming" not in result.html and "Yes!" in result.html


def test_reply_fallback_removed_from_plain_body() -> None:
    result = convert({"msgtype": "m.text", "body": "> * <@bob:example.org> waves\n\nhello"})
    assert result.text == "hello"


def test_quote_that_is_not_a_fallback_is_kept() -> None:
    assert (
        convert({"msgtype": "m.text", "body": "> a real quote\n\nmine"}).text
        == "> a real quote\n\nmine"
    )


def test_text_is_derived_from_html_when_body_is_empty() -> None:
    result = convert(
        html_body(
            "<p>First <b>para</b></p><ul><li>one</li><li>two</li></ul>"
            "<blockquote>quoted</blockquote><p><a href='https://x.example/'>site</a></p>"
        )
    )
    assert result.text == "First para\n\n- one\n- two\n\n> quoted\n\nsite <https://x.example/>"


def test_dangerous_html_is_removed() -> None:
    result = convert(
        html_body(
            '<p onclick="x()">ok</p><script>alert(1)</script><style>p{}</style>'
            '<a href="javascript:alert(1)">js</a><img src="mxc://a/b" alt="cat"><iframe src="https://x"></iframe>'
            '<font color="red">red</font>',
            "ok",
        )
    )
    html = result.html
    assert html is not None
    for bad in (
        "onclick",
        "<script",
        "alert",
        "<style",
        "javascript",
        "<img",
        "mxc://",
        "<iframe",
        "<font",
    ):
        assert bad not in html
    assert "cat" in html and "red" in html and "<p>ok</p>" in html


def test_unsupported_msgtype() -> None:
    with pytest.raises(UnsupportedContent) as info:
        convert({"msgtype": "m.image", "body": "cat.png"})
    assert "m.image" in info.value.reason


def test_html_to_text_nested_structures() -> None:
    text = html_to_text(
        "<ol start='3'><li>three</li><li>four<ul><li>sub</li></ul></li></ol>"
        "<blockquote><p>a</p><blockquote>b</blockquote></blockquote>"
        "<pre>x\n  y</pre><p>one<br>two</p><table><tr><th>k</th><th>v</th></tr></table>"
    )
    assert text == "3. three\n4. four\n   - sub\n\n> a\n>\n> > b\n\nx\n  y\n\none\ntwo\n\nk | v"


def test_html_to_text_mail_layout() -> None:
    # Gmail writes a line per <div>; layout tables leave empty cells; icon links have no text.
    assert html_to_text("<div>a</div><div><br></div><div>b</div><div>c</div>") == "a\n\nb\nc"
    table = "<table><tr><td>a</td><td> </td><td>b</td></tr><tr><td></td><td></td></tr></table>"
    assert html_to_text(table) == "a | b"
    links = (
        '<p>see <a href="https://x.example/"></a> <a href="mailto:a@b.example">&lt;a@b.example'
        '&gt;</a> <a href="https://y.example/">site</a> <img alt="logo"></p>'
        "<svg><text>no</text></svg><noscript>no</noscript>"
    )
    assert html_to_text(links) == "see <a@b.example> site <https://y.example/> [logo]"


def test_html_to_text_hostile_input() -> None:
    huge = "9" * 5000  # more digits than int() accepts
    lists = f'<ol start="²"><li>a</li></ol><ol start="{huge}"><li>b</li></ol>'
    assert html_to_text(lists) == "1. a\n\n1. b"
    # Nesting deeper than MAX_MARKED_DEPTH is not marked deeper, so lines stay short.
    text = html_to_text("<blockquote>" * 5000 + "<ul><li>" * 5000 + "x<br>" * 5000)
    assert text.startswith("> " * MAX_MARKED_DEPTH + "-")
    assert max(len(line) for line in text.split("\n")) <= 5 * MAX_MARKED_DEPTH + 3
