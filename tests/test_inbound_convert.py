"""ParsedEmail -> Matrix event drafts: HTML safety, images, quotes, reports, sizes, placeholders."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bridge.connectors.email.addresses import Mailbox
from bridge.connectors.email.inbound.convert import TRUNCATION_NOTE, convert_email, convert_rejected
from bridge.connectors.email.inbound.html_sanitize import sanitize_html
from bridge.connectors.email.inbound.model import Attachment, ParsedEmail
from bridge.connectors.email.inbound.parse import parse_email_sync
from bridge.network.placeholders import PLACEHOLDER_PREFIX, substitute_placeholders
from tests.helpers.hostile_mail import HOSTILE_HTML, HOSTILE_TEXT
from tests.helpers.matrix_html import check_content, html_problems

CORPUS = Path(__file__).parent / "corpus"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def parsed(
    text: str = "", html: str = "", attachments: list[Attachment] | None = None, **fields
) -> ParsedEmail:
    base = {
        "message_id": "<m@example.org>",
        "in_reply_to": None,
        "references": [],
        "subject": "Hello there",
        "sender": Mailbox("alice@example.org", "Alice"),
        "text": text,
        "html": html,
        "attachments": attachments or [],
        "raw": b"From: alice@example.org\r\nSubject: Hello there\r\n\r\n" + text.encode(),
    }
    base.update(fields)
    return ParsedEmail(**base)


def all_valid(converted) -> None:
    for draft in converted.events:
        assert draft.type == "m.room.message"
        check_content(draft.content)


def text_event(converted) -> dict:
    return converted.events[0].content


# --- HTML safety ------------------------------------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script><p>visible</p>",
    '<img src=x onerror=alert(1)><p onclick="steal()">visible</p>',
    '<a href="javascript:alert(1)">visible</a>',
    '<a href="JaVaScRiPt:alert(1)">visible</a><a href="  javascript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">visible</a>',
    "<svg onload=alert(1)><script>alert(1)</script></svg><p>visible</p>",
    '<iframe src="https://evil.example"></iframe><p>visible</p>',
    '<style>p{background:url(javascript:alert(1))}</style><p style="x:expression(alert(1))">visible</p>',
    (
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table>"
        "</mtext></math><p>visible</p>"
    ),
    (
        '<math><mtext><table><mglyph><style><!--</style><img title="--&gt;&lt;img src=1 '
        'onerror=alert(1)&gt;">'
    ),
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">visible</p></noscript><p>visible</p>',
    '<form action="javascript:alert(1)"><input type=submit></form><p>visible</p>',
    '<object data="javascript:alert(1)"></object><embed src="javascript:alert(1)"><p>visible</p>',
    '<div style="background-image:url(https://tracker.example/p.gif)">visible</div>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">visible</a>',
    '<base href="javascript:/"><a href="x">visible</a>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)"><p>visible</p>',
    "<!--<script>alert(1)</script>--><p>visible</p><![CDATA[<script>alert(1)</script>]]>",
    '<p>visible<img src="https://tracker.example/open.gif?id=1" width="1" height="1"></p>',
    '<a href="vbscript:msgbox(1)">visible</a><a href="file:///etc/passwd">f</a>',
]


@pytest.mark.parametrize("html", HOSTILE)
def test_hostile_html_never_leaks(html: str) -> None:
    converted = convert_email(parsed(html=html), include_subject=True)
    all_valid(converted)
    formatted = text_event(converted)["formatted_body"]
    assert html_problems(formatted) == []
    if "visible" in html:
        assert "visible" in formatted
    lowered = formatted.lower()
    for bad in (
        "<script",
        "javascript:",
        "vbscript:",
        "onerror",
        "onclick",
        "onload",
        "data:text",
        "tracker",
    ):
        assert bad not in lowered


def test_style_script_and_head_content_is_not_shown_as_text() -> None:
    html = (
        "<html><head><title>Newsletter title</title><style>.x{color:red}</style></head>"
        "<body><script>var secret = 1;</script><p>Real text</p></body></html>"
    )
    content = text_event(convert_email(parsed(html=html), include_subject=False))
    for shown in (content["body"], content["formatted_body"]):
        assert "Real text" in shown
        assert (
            "color:red" not in shown and "secret" not in shown and "Newsletter title" not in shown
        )


def test_hidden_preheader_is_dropped() -> None:
    html = '<div style="display:none;max-height:0">Preview text padding</div><p>Body text</p>'
    content = text_event(convert_email(parsed(html=html), include_subject=False))
    assert "Preview text" not in content["formatted_body"] and "Preview text" not in content["body"]


def test_links_and_allowed_formatting_survive() -> None:
    html = (
        '<p><b>bold</b> <i>it</i> <a href="https://example.org/a?b=1&amp;c=2" target="_blank">link</a> '
        '<a href="mailto:bob@example.org">mail</a> <a href="/relative">rel</a></p>'
        '<ol start="3"><li>three</li></ol><font color="#ff0000">red</font><pre>  code  </pre>'
    )
    out = sanitize_html(html)
    assert '<a href="https://example.org/a?b=1&amp;c=2" target="_blank">link</a>' in out
    assert '<a href="mailto:bob@example.org">mail</a>' in out
    assert "<a>rel</a>" in out
    assert '<ol start="3">' in out and '<font color="#ff0000">red</font>' in out
    assert "<pre>  code  </pre>" in out
    assert html_problems(out) == []


# --- images -----------------------------------------------------------------------------------


def test_cid_image_rewritten_to_placeholder_and_not_posted_twice() -> None:
    image = Attachment("photo.png", "image/png", PNG, content_id="img1@example.org", inline=True)
    html = '<p>Look:</p><img src="cid:img1@example.org" alt="photo" width="300">'
    converted = convert_email(parsed(html=html, attachments=[image]), include_subject=False)
    all_valid(converted)
    assert len(converted.events) == 1
    formatted = text_event(converted)["formatted_body"]
    assert f'<img src="{PLACEHOLDER_PREFIX}att0" alt="photo" width="300">' in formatted
    assert converted.uploads["att0"].data == PNG
    real = substitute_placeholders(text_event(converted), {"att0": "mxc://example.org/real"})
    assert '<img src="mxc://example.org/real"' in real["formatted_body"]
    assert PLACEHOLDER_PREFIX not in json.dumps(real)


def test_tracking_pixel_and_remote_images_dropped() -> None:
    html = (
        '<p>Hi</p><img src="https://tracker.example/o.gif?u=1" width="1" height="1">'
        '<img src="http://cdn.example/banner.jpg" alt="banner"><img src="cid:unknown@x">'
    )
    converted = convert_email(parsed(html=html), include_subject=False)
    formatted = text_event(converted)["formatted_body"]
    assert "<img" not in formatted and "tracker" not in formatted and "cdn.example" not in formatted
    assert converted.uploads == {}


def test_inline_spacer_image_is_neither_shown_nor_uploaded() -> None:
    spacer = Attachment("s.png", "image/png", PNG, content_id="s@x", inline=True)
    converted = convert_email(
        parsed(html='<p>x</p><img src="cid:s@x" width="1" height="1">', attachments=[spacer]),
        include_subject=False,
    )
    assert "<img" not in text_event(converted)["formatted_body"]
    # Not referenced from the text, so it is posted as a file like any other attachment.
    assert [e.attachment_key for e in converted.events] == [None, "att0"]


def test_corpus_inline_image() -> None:
    converted = convert_email(
        parse_email_sync((CORPUS / "inline/deltachat__apple_cid_jpg.eml").read_bytes()),
        include_subject=True,
    )
    all_valid(converted)
    assert len(converted.events) == 1
    assert f'src="{PLACEHOLDER_PREFIX}att0"' in text_event(converted)["formatted_body"]
    assert converted.uploads["att0"].mimetype == "image/jpeg"


# --- attachments ------------------------------------------------------------------------------


def test_attachment_events_use_verified_types() -> None:
    attachments = [
        Attachment("scan.png", "image/png", PDF),  # a PDF claiming to be an image
        Attachment("photo", "application/octet-stream", PNG),  # an image labelled generically
        Attachment("notes.txt", "text/plain", b"plain notes\n"),
        Attachment(
            "report.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            b"PK\x03\x04" + b"\x00" * 40,
        ),
    ]
    converted = convert_email(
        parsed(text="see files", attachments=attachments), include_subject=False
    )
    all_valid(converted)
    files = [e.content for e in converted.events[1:]]
    assert [(c["msgtype"], c["info"]["mimetype"]) for c in files] == [
        ("m.file", "application/pdf"),
        ("m.image", "image/png"),
        ("m.file", "text/plain"),
        ("m.file", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ]
    first = files[0]
    assert first["body"] == first["filename"] == "scan.png"
    assert first["url"] == PLACEHOLDER_PREFIX + "att0" and first["info"]["size"] == len(PDF)
    assert converted.uploads["att0"].mimetype == "application/pdf"
    assert [e.attachment_key for e in converted.events] == [None, "att0", "att1", "att2", "att3"]


def test_mail_with_only_an_attachment() -> None:
    converted = convert_email(
        parsed(subject="", attachments=[Attachment("a.pdf", "application/pdf", PDF)]),
        include_subject=True,
    )
    assert [e.content["msgtype"] for e in converted.events] == ["m.file"]


# --- text, subject, quotes --------------------------------------------------------------------


def test_plain_text_without_extras_has_no_formatted_body() -> None:
    content = text_event(convert_email(parsed(text="Just text.\n"), include_subject=False))
    assert content == {"msgtype": "m.text", "body": "Just text.", "m.mentions": {}}


def test_subject_shown_in_bold_on_its_own_line() -> None:
    content = text_event(convert_email(parsed(text="Body <b>text</b>"), include_subject=True))
    assert content["body"] == "Hello there\n\nBody <b>text</b>"
    assert (
        content["formatted_body"] == "<strong>Hello there</strong><br>Body &lt;b&gt;text&lt;/b&gt;"
    )


def test_quoted_reply_collapsed_into_details() -> None:
    text = "Sounds good!\n\nOn Mon, 1 Jan 2024 at 10:00, Bob <bob@example.org> wrote:\n> Shall we meet?\n> Bob\n"
    content = text_event(convert_email(parsed(text=text), include_subject=False))
    formatted = content["formatted_body"]
    assert formatted.startswith("Sounds good!<details><summary>Quoted text</summary>")
    assert "Shall we meet?" in formatted and formatted.endswith("</details>")
    assert content["body"].startswith("Sounds good!\n\nOn Mon")  # nothing is lost from the body


def test_interleaved_reply_is_left_whole() -> None:
    text = ("On Mon, Bob wrote:\n> Shall we meet?\nYes, at noon.\n> Where?\nAt the station.\n")
    content = text_event(convert_email(parsed(text=text), include_subject=False))
    assert "<details>" not in content.get("formatted_body", "")
    assert "Yes, at noon." in content["body"] and "> Where?" in content["body"]


def test_bottom_posted_reply_folds_the_quote_above_the_answer() -> None:
    text = "On Mon, Bob wrote:\n> Shall we meet?\n\nYes, at noon.\n"
    content = text_event(convert_email(parsed(text=text), include_subject=False))
    assert content["formatted_body"].startswith("<details><summary>Quoted text</summary>On Mon")
    assert content["formatted_body"].endswith("</details>Yes, at noon.")
    assert content["body"] == "On Mon, Bob wrote:\n> Shall we meet?\n\nYes, at noon."


def test_html_gmail_quote_collapsed() -> None:
    html = (
        '<div dir="ltr">New answer</div><br><div class="gmail_quote"><div class="gmail_attr">'
        'On Mon, Bob wrote:<br></div><blockquote class="gmail_quote">old text</blockquote></div>'
    )
    text = "New answer\n\nOn Mon, Bob wrote:\n> old text\n"
    content = text_event(convert_email(parsed(text=text, html=html), include_subject=False))
    kept, _, rest = content["formatted_body"].partition("<details>")
    assert "New answer" in kept and "old text" not in kept
    assert rest.startswith("<summary>Quoted text</summary>") and "old text" in rest


def test_html_cite_blockquote_with_wrote_line_collapsed() -> None:
    converted = convert_email(
        parse_email_sync((CORPUS / "replies-quoting/deltachat__allinkl-quote.eml").read_bytes()),
        include_subject=False,
    )
    kept, _, rest = text_event(converted)["formatted_body"].partition("<details>")
    assert "It's 1.0." in kept and "schrieb" not in kept
    assert "Hocuri schrieb" in rest and "What's the version?" in rest


def test_interleaved_reply_is_not_cut() -> None:
    text = "On Tuesday, Bob wrote:\n> First question?\nFirst answer.\n> Second question?\nSecond answer.\n"
    content = text_event(convert_email(parsed(text=text), include_subject=False))
    assert "formatted_body" not in content and "Second answer." in content["body"]


def test_signature_collapsed() -> None:
    content = text_event(
        convert_email(parsed(text="See you.\n-- \nAlice\nExample Corp\n"), include_subject=False)
    )
    assert (
        content["formatted_body"]
        == "See you.<details><summary>Signature</summary>-- <br>Alice<br>Example Corp</details>"
    )


# --- reports, auto-replies, encryption --------------------------------------------------------


def test_dsn_notice_names_failed_recipient_and_reason() -> None:
    converted = convert_email(
        parse_email_sync((CORPUS / "bounces/sisimai__rfc3464-01.eml").read_bytes()),
        include_subject=True,
    )
    all_valid(converted)
    assert len(converted.events) == 1
    content = text_event(converted)
    assert content["msgtype"] == "m.notice"
    first_line = content["body"].splitlines()[0]
    assert first_line.startswith("Delivery failed to userunknown@bouncehammer.jp: ")
    assert "User Unknown" in first_line
    assert "<details><summary>Report details</summary>" in content["formatted_body"]


def test_non_standard_bounce_notice() -> None:
    content = text_event(
        convert_email(
            parse_email_sync((CORPUS / "bounces/deltachat__gmx_ndn.eml").read_bytes()),
            include_subject=True,
        )
    )
    assert content["msgtype"] == "m.notice"
    assert content["body"].startswith("Delivery failed to snaerituhaeirns@gmail.com: ")
    assert "(status 5.1.1)" in content["body"].splitlines()[0]


def test_read_receipt_notice() -> None:
    content = text_event(
        convert_email(
            parse_email_sync(
                (
                    CORPUS / "bounces/deltachat__ms_exchange_report_disposition_notification.eml"
                ).read_bytes()
            ),
            include_subject=True,
        )
    )
    assert content["msgtype"] == "m.notice"
    assert content["body"].startswith("Read receipt: the message was displayed by bob@example.net.")


def test_auto_reply_labelled() -> None:
    converted = convert_email(
        parse_email_sync((CORPUS / "bounces/sisimai__rfc3834-01.eml").read_bytes()),
        include_subject=True,
    )
    content = text_event(converted)
    assert content["msgtype"] == "m.notice"
    assert content["body"].startswith("Auto-reply: Away until May 5")
    assert content["formatted_body"].startswith(
        "<em>Auto-reply:</em> <strong>Away until May 5</strong><br>"
    )
    unlabelled = text_event(
        convert_email(parsed(text="hi", auto_reply=True), include_subject=False)
    )
    assert unlabelled["body"] == "Auto-reply:\n\nhi"


def test_encrypted_mail_explained() -> None:
    converted = convert_email(
        parse_email_sync(
            (CORPUS / "signed-encrypted/deltachat__thunderbird_encrypted_unsigned.eml").read_bytes()
        ),
        include_subject=False,
    )
    assert "encrypted" in text_event(converted)["body"]
    assert converted.events[1].content["filename"] == "encrypted.asc"


# --- sizes ------------------------------------------------------------------------------------


def _sizes(converted) -> list[int]:
    return [len(json.dumps(e.content, ensure_ascii=False).encode()) for e in converted.events]


def test_long_text_cut_at_paragraph_with_raw_attached() -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 60 for i in range(400)]
    text = "\n\n".join(paragraphs)
    mail = parsed(text=text, raw=("Subject: long\r\n\r\n" + text).encode())
    converted = convert_email(mail, include_subject=True)
    all_valid(converted)
    assert max(_sizes(converted)) <= 60_000
    body = text_event(converted)["body"]
    assert body.endswith(TRUNCATION_NOTE)
    kept = body[: -len(TRUNCATION_NOTE)].rstrip()
    assert kept.endswith("word") and kept.split("\n\n")[-1].startswith("Paragraph ")
    raw_event = converted.events[-1]
    assert raw_event.attachment_key == "message"
    assert (
        raw_event.content["filename"] == "message.eml"
        and raw_event.content["info"]["mimetype"] == "message/rfc822"
    )
    assert converted.uploads["message"].data == mail.raw


def test_long_html_cut_keeps_markup_valid() -> None:
    html = "".join(f"<p>Row {i} <b>bold</b> " + "ä€😀 " * 80 + "</p>" for i in range(600))
    converted = convert_email(parsed(html=html), include_subject=True, max_event_bytes=30_000)
    all_valid(converted)
    assert max(_sizes(converted)) <= 30_000
    formatted = text_event(converted)["formatted_body"]
    assert formatted.count("<p>") == formatted.count("</p>")
    assert TRUNCATION_NOTE in formatted and converted.events[-1].attachment_key == "message"


def test_one_huge_line_is_still_cut() -> None:
    converted = convert_email(
        parsed(text="x" * 300_000, html="<div>" + "y" * 300_000 + "</div>"), include_subject=True
    )
    all_valid(converted)
    assert max(_sizes(converted)) <= 60_000


@pytest.mark.parametrize("html", HOSTILE_HTML)
def test_huge_hostile_html_is_cut_and_valid(html: str) -> None:
    """How long these take is measured by bench.conversion_cost."""
    converted = convert_email(parsed(html=html), include_subject=True)
    all_valid(converted)
    assert converted.events[-1].attachment_key == "message"


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_quote_detection_on_hostile_text_gives_valid_events(text: str) -> None:
    converted = convert_email(parsed(text=text), include_subject=False)
    all_valid(converted)


def test_huge_subject_is_shortened() -> None:
    content = text_event(
        convert_email(parsed(text="hi", subject="S" * 10_000), include_subject=True)
    )
    assert len(content["body"]) < 1000


# --- rejected mail ----------------------------------------------------------------------------


def test_convert_rejected_attaches_raw() -> None:
    raw = b"From: x@example.org\r\n\r\n" + b"\x00garbage" * 10
    converted = convert_rejected(raw, "the message is nested more than 20 levels deep")
    all_valid(converted)
    notice, attachment = converted.events
    assert notice.content["msgtype"] == "m.notice"
    assert "nested more than 20 levels deep" in notice.content["body"]
    assert (
        attachment.content["msgtype"] == "m.file"
        and attachment.content["filename"] == "message.eml"
    )
    assert converted.uploads[attachment.attachment_key].data == raw
