"""The shared HTML -> plain text renderer of the email connector."""

from __future__ import annotations

from bridge.connectors.email.html_text import html_to_text


def test_unclosed_head_does_not_swallow_the_body() -> None:
    html = "<html><head><title>t</title><style>p{}</style><body><p>Hello there</p></body></html>"
    assert html_to_text(html) == "Hello there"


def test_script_and_style_stay_hidden() -> None:
    assert html_to_text("<p>a</p><script>alert(1)</script><style>b{}</style><p>c</p>") == "a\n\nc"
