"""A received mail's HTML is tokenized once; text, quote folding and sanitising replay that."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.connectors.email import html_doc
from bridge.connectors.email.addresses import Mailbox
from bridge.connectors.email.html_doc import HtmlDoc
from bridge.connectors.email.inbound.convert import convert_email
from bridge.connectors.email.inbound.limits import MailRejected
from bridge.connectors.email.inbound.model import ParsedEmail
from bridge.connectors.email.inbound.parse import parse_email_sync
from bridge.connectors.email.inbound.quotes import split_html
from tests.helpers.hostile_mail import HOSTILE_HTML

CORPUS = Path(__file__).parent / "corpus"


def _corpus_html() -> Iterator[tuple[str, str]]:
    for path in sorted(CORPUS.glob("*/*.eml")):
        try:
            html = parse_email_sync(path.read_bytes()).html
        except MailRejected:
            continue
        if html.strip():
            yield path.relative_to(CORPUS).as_posix(), html


SAMPLES = [*_corpus_html(), *((f"hostile {i}", h) for i, h in enumerate(HOSTILE_HTML))]


@pytest.fixture
def tokenized() -> Iterator[list[str]]:
    seen: list[str] = []
    html_doc.on_tokenize.append(seen.append)
    try:
        yield seen
    finally:
        html_doc.on_tokenize.remove(seen.append)


def test_html_of_a_mail_is_tokenized_once(tokenized: list[str]) -> None:
    html = (
        '<div class="body"><p>Sounds good, see you <b>then</b>.</p></div>'
        '<div class="gmail_quote"><div class="gmail_attr">On Mon, Ann wrote:</div>'
        '<blockquote class="gmail_quote"><p>Lunch on Friday?</p></blockquote></div>'
    )
    mail = ParsedEmail(message_id="<m@example.org>", in_reply_to=None, references=[],
                       subject="Lunch", sender=Mailbox("ann@example.org"), html=html)
    converted = convert_email(mail, include_subject=False)
    content = converted.events[0].content
    assert content["body"].startswith("Sounds good, see you then.")
    assert "<details><summary>Quoted text</summary>" in content["formatted_body"]
    # Text, both halves of the quote split, and the sanitiser read the one tokenisation; what
    # else was tokenized is the sanitiser's own output (no mail markup such as classes left).
    assert [s for s in tokenized if 'class="' in s] == [html]


@pytest.mark.parametrize(("name", "html"), SAMPLES, ids=[n for n, _ in SAMPLES])
def test_halves_of_a_split_read_as_if_tokenized_anew(name: str, html: str) -> None:
    split = split_html(HtmlDoc.of(html))
    for text, doc in ((split.kept, split.kept_doc), (split.stripped, split.stripped_doc)):
        if doc is not None:
            assert doc.text == text
            assert doc.events == HtmlDoc.of(text).events


def test_cut_inside_a_construct_is_tokenized_anew() -> None:
    doc = HtmlDoc.of("<p>ab</p><p>cd</p>")
    assert doc.prefix(4).events == HtmlDoc.of("<p>a").events
    assert doc.suffix(10).events == HtmlDoc.of("p>cd</p>").events
