"""Parsing received mail: caps, charsets, file names, headers, reports, the worker pool."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC
import os
from pathlib import Path
import signal

import pytest
import pytest_asyncio

from bridge.connectors.email.inbound.limits import MailRejected, ParseLimits
from bridge.connectors.email.inbound.parse import parse_email, parse_email_sync
from bridge.connectors.email.inbound.pool import ParserPool

CORPUS = Path(__file__).parent / "corpus"


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def mail(headers: str, body: str = "Hello.\r\n") -> bytes:
    head = headers.strip().replace("\n", "\r\n")
    return (head + "\r\n\r\n" + body).encode("utf-8", "surrogateescape")


def nested(depth: int) -> bytes:
    """A mail whose multiparts are nested `depth` levels deep."""
    lines = ["From: a@example.org", "Subject: deep", "MIME-Version: 1.0"]
    for level in range(depth):
        lines += [f'Content-Type: multipart/mixed; boundary="b{level}"', "", f"--b{level}"]
    lines += ["Content-Type: text/plain", "", "innermost"]
    for level in reversed(range(depth)):
        lines += [f"--b{level}--"]
    return "\r\n".join(lines).encode()


@pytest_asyncio.fixture(scope="module")
async def pool():
    parser_pool = ParserPool(1)
    yield parser_pool
    await parser_pool.close()


# --- file names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "filename"),
    [
        ("deltachat__attach_filename_apostrophed.eml", "Maßnahmen Okt. 2021.html"),
        ("deltachat__attach_filename_apostrophed_cont.eml", "Maßnahmen März 2022.html"),
        ("deltachat__attach_filename_apostrophed_cp1252.eml", "Auftragsbestätigung.pdf"),
        ("deltachat__attach_filename_apostrophed_invalid.eml", "somedäüta.html.zip"),
        ("deltachat__attach_filename_apostrophed_windows1251.eml", "программирование.HTM"),
        ("deltachat__attach_filename_encoded_words.eml", "Maßnahmen Okt. 2020.html"),
        ("deltachat__attach_filename_encoded_words_cont.eml", "Maßn'ah'men Okt. 2020.html"),
        ("deltachat__attach_filename_encoded_words_windows1251.eml", "file Что нового 2020.pdf"),
        ("deltachat__pdf_filename_continuation.eml", "test pdf äöüß.pdf"),
        ("enmime__mime-bad-8bit-filename.eml", "管理.doc"),
        ("enmime__mime-unquoted-tspecials-param.eml", "Invoice_(302232133150612).pdf"),
        ("imap_tools__attachment_emails_attachment_with_unquoted_name.eml", "This is a test.txt"),
        (
            "imap_tools__attachment_emails_attachment_with_base64_encoded_name.eml",
            "This is a test.pdf",
        ),
    ],
)
def test_attachment_filenames(name: str, filename: str) -> None:
    parsed = parse_email_sync(corpus(f"attachments/{name}"))
    assert [a.filename for a in parsed.attachments] == [filename]


def test_rfc2231_mixed_segments_and_path_components() -> None:
    raw = mail(
        """
From: a@example.org
Subject: files
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="x"
""",
        "--x\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        "--x\r\nContent-Type: application/octet-stream\r\n"
        "Content-Disposition: attachment; filename*0*=iso-8859-1''R%E9sum%E9; filename*1=\" final.txt\"\r\n"
        "\r\nabc\r\n"
        "--x\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="../../etc/passwd"\r\n\r\nxyz\r\n--x--\r\n',
    )
    parsed = parse_email_sync(raw)
    assert [a.filename for a in parsed.attachments] == ["Résumé final.txt", ".._.._etc_passwd"]
    assert parsed.attachments[0].data == b"abc"


# --- charsets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("deltachat__text_plain_iso88591.eml", "äöüßÄÖÜ"),
        ("deltachat__text_plain_unspecified.eml", "does not have Content-Type"),
        ("deltachat__cp1252-html.eml", "foo bar ä ö ü ß"),
        ("enmime__lowq_incorrect-charset.eml", "∮ E⋅da = Q"),  # declared us-ascii, is UTF-8
        ("enmime__lowq_unk-charset-part.eml", "A text section"),  # charset=fakescii
        ("enmime__parts_chardet-success-big-5.eml", "顏是家訓"),  # declared us-ascii, is Big5
        ("imap_tools__multi_charset_ks_c_5601-1987.eml", "스티해"),
        ("imap_tools__multi_charset_japanese_iso_2022.eml", "すみません。"),
        ("imap_tools__multi_charset_japanese_shift_jis.eml", "このメールはテスト用のメールです。"),
        (
            "stalwart-dovecot__thirdparty_005.eml",
            "Test message\nTest message\nTest message\n『世界人権宣言』",
        ),
    ],
)
def test_body_charset_fallbacks(name: str, fragment: str) -> None:
    parsed = parse_email_sync(corpus(f"charsets/{name}"))
    assert fragment in parsed.text
    assert "\ufffd" not in parsed.text and "\x00" not in parsed.text


def test_html_with_unknown_charset() -> None:
    parsed = parse_email_sync(corpus("charsets/enmime__lowq_unk-charset-html-only.eml"))
    assert "<p>Hello World!</p>" in parsed.html


@pytest.mark.parametrize(
    ("header", "subject"),
    [
        # Declared UTF-8 word that is really Latin-1.
        ("=?utf-8?q?Caf=E9?=", "Café"),
        # Raw UTF-8 (RFC 6532) and raw Latin-1 without any declaration.
        ("Gr\udcc3\udcbc\udcc3\udc9fe", "Grüße"),
        ("Gr\udcfc\udcdfe", "Grüße"),
        # A multi-byte character split over two encoded words; an unknown charset label.
        ("=?utf-8?b?8J+Y?= =?utf-8?b?gA==?=", "😀"),
        ("=?x-unknown?q?plain?=", "plain"),
        # Raw 7-bit ISO-2022-JP (escape sequences, no encoded words).
        ("Re: \x1b$B%F%9%H\x1b(B", "Re: テスト"),
    ],
)
def test_subject_charset_fallbacks(header: str, subject: str) -> None:
    parsed = parse_email_sync(mail(f"From: a@example.org\nSubject: {header}"))
    assert parsed.subject == subject


# --- headers ----------------------------------------------------------------------------------


def test_headers_are_normalised() -> None:
    raw = mail(
        """
From: =?utf-8?q?M=C3=BCller=2C_Anna?= <Anna@EXAMPLE.org>
To: b@example.org, "C" <c@Example.ORG>, b@example.org
Cc: broken@@, d@example.net
Reply-To: r@example.org
Subject: =?utf-8?q?line=0D=0Abreak=00nul?= and
 folded
Message-ID:   <abc@host.example>   (comment)
In-Reply-To: <parent@host.example>
References: <root@host.example>
 <parent@host.example> <root@host.example>
List-Id: Announcements <announce.Lists.Example.org>
Date: Tue, 1 Aug 2023 10:00:00 -0000
"""
    )
    parsed = parse_email_sync(raw)
    assert parsed.sender.addr == "Anna@example.org" and parsed.sender.name == "Müller, Anna"
    assert [m.addr for m in parsed.to] == ["b@example.org", "c@example.org"]
    assert [m.addr for m in parsed.cc] == ["d@example.net"]
    assert [m.addr for m in parsed.reply_to] == ["r@example.org"]
    assert parsed.subject == "line break nul and folded"
    assert not any(c in parsed.subject for c in "\r\n\x00")
    assert parsed.message_id == "<abc@host.example>"
    assert parsed.in_reply_to == "<parent@host.example>"
    assert parsed.references == ["<root@host.example>", "<parent@host.example>"]
    assert parsed.list_id == "announce.lists.example.org"
    assert parsed.date is not None and parsed.date.tzinfo is not None
    assert parsed.date.utcoffset() == UTC.utcoffset(None)
    assert parsed.raw == raw and parsed.raw_size == len(raw)


def test_missing_and_bad_headers() -> None:
    parsed = parse_email_sync(mail("Subject: x\nDate: yesterday-ish\nMessage-ID: no id here"))
    assert parsed.sender.addr == "unknown@invalid"
    assert parsed.date is None and parsed.message_id is None


def test_hostile_address_header_does_not_crash() -> None:
    parsed = parse_email_sync(corpus("malformed/mimekit__stack-overflow.eml"))
    assert parsed.sender.addr == "test@test.com"


# --- caps -------------------------------------------------------------------------------------


def test_oversize_mail_rejected() -> None:
    with pytest.raises(MailRejected) as caught:
        parse_email_sync(mail("From: a@example.org", "x" * 5000), ParseLimits(max_bytes=1000))
    assert "limit" in caught.value.reason


def test_oversize_header_block_rejected() -> None:
    raw = mail("From: a@example.org\nX-Padding: " + "y" * 3000)
    with pytest.raises(MailRejected) as caught:
        parse_email_sync(raw, ParseLimits(max_header_bytes=2048))
    assert "headers" in caught.value.reason


def test_nesting_within_the_cap_is_fine() -> None:
    parsed = parse_email_sync(nested(10))
    assert parsed.text.strip() == "innermost"


@pytest.mark.parametrize("depth", [21, 60, 2000])
def test_deep_nesting_rejected(depth: int) -> None:
    with pytest.raises(MailRejected) as caught:
        parse_email_sync(nested(depth))
    assert "nested" in caught.value.reason


def test_too_many_parts_rejected() -> None:
    parts = "".join(f"--x\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(30))
    raw = mail(
        'From: a@example.org\nContent-Type: multipart/mixed; boundary="x"', parts + "--x--\r\n"
    )
    assert len(parse_email_sync(raw, ParseLimits(max_parts=31)).text.splitlines()) == 30
    with pytest.raises(MailRejected) as caught:
        parse_email_sync(raw, ParseLimits(max_parts=20))
    assert "parts" in caught.value.reason


def test_time_budget_in_process() -> None:
    with pytest.raises(MailRejected) as caught:
        parse_email_sync(corpus("structure/flanker__torture.eml"), ParseLimits(time_budget_s=0.0))
    assert "too long" in caught.value.reason


# --- reports and auto-replies -----------------------------------------------------------------


def test_dsn_report() -> None:
    parsed = parse_email_sync(corpus("bounces/sisimai__lhost-postfix-01.eml"))
    report = parsed.report
    assert report is not None and report.kind == "delivery-status"
    assert report.failed_recipients == ["r@p351355.pool.example.ne.jp"]
    assert report.status == "5.1.1"
    assert "No such user" in (report.diagnostic or "")
    assert parsed.auto_reply is False
    testrun = parse_email_sync(corpus("bounces/deltachat__testrun_ndn.eml")).report
    assert (
        testrun is not None
        and testrun.original_message_id == "<Mr.A7pTA5IgrUA.q4bP41vAJOp@testrun.org>"
    )


def test_global_dsn_and_non_standard_bounces() -> None:
    testrun = parse_email_sync(corpus("bounces/deltachat__testrun_ndn.eml")).report
    assert testrun is not None and testrun.failed_recipients == ["hcksocnsofoejx@five.chat"]
    gmx = parse_email_sync(corpus("bounces/deltachat__gmx_ndn.eml")).report
    assert gmx is not None and gmx.kind == "bounce"
    assert gmx.failed_recipients == ["snaerituhaeirns@gmail.com"] and gmx.status == "5.1.1"
    assert "does not exist" in (gmx.diagnostic or "") and "550-5.1.1" not in (gmx.diagnostic or "")
    assert gmx.original_message_id == "<9c9c2a32-056b-3592-c372-d7e8f0bd4bc2@gmx.de>"
    exim = parse_email_sync(corpus("bounces/sisimai__lhost-exim-01.eml")).report
    assert exim is not None and exim.failed_recipients == ["kijitora@example.ed.jp"]
    assert parse_email_sync(corpus("bounces/sisimai__not-is-not-bounce-01.eml")).report is None


def test_read_receipt() -> None:
    report = parse_email_sync(
        corpus("bounces/deltachat__ms_exchange_report_disposition_notification.eml")
    ).report
    assert report is not None and report.kind == "disposition-notification"
    assert report.disposition == "displayed by bob@example.net"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Auto-Submitted: auto-replied", True),
        ("X-Autoreply: yes", True),
        ("Precedence: auto_reply", True),
        ("Auto-Submitted: auto-generated", False),
        ("Auto-Submitted: no", False),
        ("Precedence: bulk", False),
    ],
)
def test_auto_reply_detection(header: str, expected: bool) -> None:
    parsed = parse_email_sync(mail(f"From: a@example.org\nSubject: Away\n{header}"))
    assert parsed.auto_reply is expected


def test_vacation_notice_from_corpus() -> None:
    assert parse_email_sync(corpus("bounces/sisimai__rfc3834-01.eml")).auto_reply is True


# --- structure --------------------------------------------------------------------------------


def test_attached_message_kept_whole() -> None:
    parsed = parse_email_sync(
        corpus("attachments/imap_tools__attachment_emails_attachment_message_rfc822.eml")
    )
    assert [(a.filename, a.mimetype) for a in parsed.attachments] == [
        ("ForwardedMessage.eml", "message/rfc822")
    ]
    inner = parse_email_sync(parsed.attachments[0].data)
    assert [a.filename for a in inner.attachments] == ["broken.pdf"]


def test_inline_parts_carry_content_ids() -> None:
    parsed = parse_email_sync(corpus("inline/deltachat__apple_cid_jpg.eml"))
    image = parsed.attachments[0]
    assert image.mimetype == "image/jpeg" and image.content_id and image.inline


def test_encrypted_and_signed() -> None:
    encrypted = parse_email_sync(
        corpus("signed-encrypted/deltachat__thunderbird_encrypted_signed.eml")
    )
    assert encrypted.encrypted and [a.filename for a in encrypted.attachments] == ["encrypted.asc"]
    signed = parse_email_sync(corpus("signed-encrypted/imap_tools__mime_emails_sig_only_email.eml"))
    assert not signed.encrypted and signed.attachments == []


def test_unsplittable_boundary_from_outlook_express() -> None:
    parsed = parse_email_sync(
        corpus("malformed/imap_tools__mime_emails_raw_email_with_illegal_boundary.eml")
    )
    assert parsed.text.strip().startswith("Hello") and "<HTML>" in parsed.html


# --- the worker pool --------------------------------------------------------------------------


async def test_parse_in_worker(pool: ParserPool) -> None:
    raw = corpus("attachments/deltachat__attach_filename_apostrophed_cont.eml")
    parsed = await parse_email(raw, ParseLimits(), pool=pool)
    assert parsed.raw == raw
    assert parsed.attachments[0].filename == "Maßnahmen März 2022.html"


async def test_worker_rejections_are_typed(pool: ParserPool) -> None:
    with pytest.raises(MailRejected):
        await parse_email(nested(30), ParseLimits(), pool=pool)
    with pytest.raises(MailRejected):
        await parse_email(b"x" * 2000, ParseLimits(max_bytes=1000), pool=pool)


async def test_overrunning_worker_is_killed_and_replaced(pool: ParserPool) -> None:
    raw = corpus("structure/flanker__torture.eml")
    await parse_email(raw, ParseLimits(), pool=pool)
    (before,) = pool.worker_pids()
    with pytest.raises(MailRejected) as caught:
        await parse_email(raw, ParseLimits(time_budget_s=0.001), pool=pool)
    assert "too long" in caught.value.reason
    assert pool.worker_pids() == []
    parsed = await parse_email(raw, ParseLimits(), pool=pool)
    assert parsed.subject == "Multi-media mail demonstration"
    assert pool.worker_pids() != [before]


async def test_worker_killed_while_idle_is_replaced(pool: ParserPool) -> None:
    await parse_email(mail("From: a@example.org\nSubject: one"), ParseLimits(), pool=pool)
    (pid,) = pool.worker_pids()
    os.kill(pid, signal.SIGKILL)  # a worker this test's pool started
    parsed = await parse_email(mail("From: a@example.org\nSubject: two"), ParseLimits(), pool=pool)
    assert parsed.subject == "two"
    assert pool.worker_pids() and pool.worker_pids() != [pid]


async def test_memory_hungry_mail_rejected_and_pool_recovers() -> None:
    payload = base64.encodebytes(bytes(range(256)) * (32 * 1024))  # 8 MiB decoded
    raw = (
        b'From: a@example.org\r\nContent-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n'
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + payload
        + b"\r\n--x--\r\n"
    )
    small = ParserPool(1, memory_limit=64 * 1024 * 1024)
    try:
        with pytest.raises(MailRejected):
            await parse_email(raw, ParseLimits(), pool=small)
        parsed = await parse_email(
            mail("From: a@example.org\nSubject: small"), ParseLimits(), pool=small
        )
        assert parsed.subject == "small"
    finally:
        await small.close()


async def test_default_pool_runs_concurrent_parses() -> None:
    from bridge.connectors.email.inbound.pool import close_default_pool

    raws = [
        corpus("charsets/flanker__bilingual-simple.eml"),
        corpus("lists/deltachat__list-from.eml"),
    ]
    try:
        results = await asyncio.gather(*(parse_email(r) for r in raws))
    finally:
        await close_default_pool()
    assert [r.raw for r in results] == raws
