"""Subjects, message ids and the header checks of compose()."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
import re

import pytest

from bridge.connectors.email.addresses import Mailbox
from bridge.connectors.email.outbound import (
    HeaderInjection,
    InvalidHeader,
    MailBody,
    OutgoingAttachment,
    OutgoingMail,
    compose,
    event_id_hash,
    event_id_hash_from_message_id,
    is_message_id_for_event,
    message_id_for_event,
    message_ids_from_header,
    reply_subject,
    subject_from_first_line,
)

DATE = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def mail(**changes) -> OutgoingMail:
    base = OutgoingMail(
        sender=Mailbox("alice@test.local", "Alice"),
        to=[Mailbox("bob@test.local", "Bob")],
        subject="Hello",
        body=MailBody("hi", "<p>hi</p>"),
        message_id="<lb.x@test.local>",
        date=DATE,
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def parse(m: OutgoingMail):
    return BytesParser(policy=policy.default).parsebytes(compose(m).as_bytes(policy=policy.SMTP))


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Hello", "Re: Hello"),
        ("Re: Hello", "Re: Hello"),
        ("RE: re: Re:Hello", "Re: Hello"),
        ("Aw: Hello", "Re: Hello"),
        ("AW: Sv: VS: Antw: Hello", "Re: Hello"),
        ("Re[2]: Hello", "Re: Hello"),
        ("Re : Hello", "Re: Hello"),
        ("回复：Hello", "Re: Hello"),
        ("Fwd: Hello", "Re: Fwd: Hello"),
        ("Re: Fwd: Hello", "Re: Fwd: Hello"),
        ("Regarding the plan", "Re: Regarding the plan"),
        ("Research: results", "Re: Research: results"),
        ("", "Re:"),
        ("  Re:   spaced   out ", "Re: spaced out"),
    ],
)
def test_reply_subject(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected
    assert reply_subject(reply_subject(subject)) == expected


def test_subject_from_first_line() -> None:
    assert subject_from_first_line("\n\n  Lunch tomorrow?  \nmore text") == "Lunch tomorrow?"
    assert subject_from_first_line("# Agenda\n- a") == "Agenda"
    assert subject_from_first_line("") == ""
    long = "word " * 40
    result = subject_from_first_line(long)
    assert len(result) <= 78 and result.endswith("…")
    assert result[:-1].split() == ["word"] * len(result[:-1].split())
    unbroken = "x" * 200
    assert subject_from_first_line(unbroken) == "x" * 77 + "…"


def test_message_id_for_event_is_deterministic_and_safe() -> None:
    event = "$Abc/+=:Def\r\n<>@ \u00e9"
    first = message_id_for_event(event, "Test.Local")
    assert first == message_id_for_event(event, "test.local")
    assert re.fullmatch(r"<lb\.[a-z2-7]{32}@test\.local>", first)
    assert message_id_for_event("$other", "test.local") != first
    assert event_id_hash_from_message_id(first) == event_id_hash(event)
    assert is_message_id_for_event(first, event)
    assert not is_message_id_for_event(first, "$other")
    assert event_id_hash_from_message_id("<foo@example.org>") is None
    assert message_id_for_event("$e", "bücher.example").endswith("@xn--bcher-kva.example>")
    with pytest.raises(InvalidHeader):
        message_id_for_event("$e", "bad domain\r\n")


def test_message_ids_from_header() -> None:
    raw = ["<a@x> (comment) <b@y>\r\n <a@x> junk <bad id@z> <c@z>"]
    assert message_ids_from_header(raw) == ["<a@x>", "<b@y>", "<c@z>"]


def test_structure_without_attachments() -> None:
    msg = compose(mail())
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["MIME-Version"] == "1.0"


def test_structure_text_only() -> None:
    msg = compose(mail(body=MailBody("only text")))
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "only text\n"


def test_structure_with_attachments() -> None:
    data = bytes(range(256)) * 3
    parsed = parse(
        mail(attachments=[OutgoingAttachment("Résumé 2024.pdf", "application/pdf", data)])
    )
    assert parsed.get_content_type() == "multipart/mixed"
    first, attachment = parsed.iter_parts()
    assert first.get_content_type() == "multipart/alternative"
    assert attachment.get_filename() == "Résumé 2024.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_payload(decode=True) == data
    assert [k for k in parsed.keys() if k.lower() == "mime-version"] == ["MIME-Version"]
    assert all("MIME-Version" not in p for p in parsed.walk() if p is not parsed)


def test_recipients_and_threading_headers() -> None:
    refs = [f"<r{i}@x.example>" for i in range(40)]
    parent = "<" + "p" * 120 + "@x.example>"
    parsed = parse(
        mail(
            cc=[Mailbox("carol@test.local"), Mailbox("bob@test.local", "dupe")],
            in_reply_to=parent,
            references=refs,
        )
    )
    assert len(parsed.get_all("To")) == 1 and len(parsed.get_all("Cc")) == 1
    assert [a.addr_spec for a in parsed["Cc"].addresses] == ["carol@test.local"]
    assert str(parsed["In-Reply-To"]) == parent
    got = str(parsed["References"]).split()
    assert (
        len(got) == 20
        and got[0] == "<r0@x.example>"
        and got[-1] == parent
        and got[-2] == "<r39@x.example>"
    )
    raw = compose(mail(in_reply_to=parent, references=refs)).as_bytes(policy=policy.SMTP)
    assert b"=?" not in raw.split(b"\r\n\r\n", 1)[0]  # ids are folded, never encoded
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


@pytest.mark.parametrize(
    "subject",
    [
        "hi\r\nBcc: evil@example.org",
        "hi\nX: y",
        "nul\x00",
        "=?UTF-8?Q?=0D=0ABcc:_evil@example.org?=",
        "Re: =?utf-8?b?aGkNCkJjYzogZXZpbEBleGFtcGxlLm9yZw==?=",
        "=?utf-8?q?=3D=3FUTF-8=3FQ=3F=3D0A=3F=3D?=",  # encoded twice
    ],
)
def test_subject_injection_is_refused(subject: str) -> None:
    with pytest.raises(HeaderInjection) as info:
        compose(mail(subject=subject))
    assert "subject" in info.value.reason


def test_encoded_subject_from_inbound_mail_is_decoded() -> None:
    parsed = parse(mail(subject="Re: =?UTF-8?Q?Caf=C3=A9?= meeting"))
    assert str(parsed["Subject"]) == "Re: Café meeting"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"sender": Mailbox("alice@test.local", "=?utf-8?q?A=0D=0ABcc:_x@y.z?=")}, HeaderInjection),
        ({"to": [Mailbox("bob@test.local\r\nBcc: x@y.z")]}, HeaderInjection),
        ({"to": [Mailbox("bob@test.local", "Bob\nX: 1")]}, HeaderInjection),
        ({"attachments": [OutgoingAttachment("a\r\nb.txt", "text/plain", b"x")]}, HeaderInjection),
        (
            {"attachments": [OutgoingAttachment("=?utf-8?q?a=0A.txt?=", "text/plain", b"x")]},
            HeaderInjection,
        ),
        ({"in_reply_to": "<a@b>\r\nX: 1"}, HeaderInjection),
        ({"references": ["<a@b>\nX: 1"]}, HeaderInjection),
        ({"extra_headers": {"Auto-Submitted": "auto-generated\r\nX: 1"}}, HeaderInjection),
        ({"extra_headers": {"Bcc": "x@y.z"}}, InvalidHeader),
        ({"extra_headers": {"Precedence": "bulk", "precedence": "list"}}, InvalidHeader),
        ({"references": ["not an id"]}, InvalidHeader),
        ({"to": [Mailbox("Bob@Test.LOCAL")]}, InvalidHeader),
        ({"to": [Mailbox("not-an-address")]}, InvalidHeader),
        ({"to": [], "cc": []}, InvalidHeader),
        ({"date": datetime(2024, 1, 1)}, InvalidHeader),
        ({"message_id": "<no-at-sign>"}, InvalidHeader),
    ],
)
def test_bad_input_is_refused(changes: dict, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        compose(mail(**changes))
    assert info.value.reason


def test_mailbox_objects_are_required() -> None:
    with pytest.raises(TypeError):
        compose(mail(to=["bob@test.local"]))


def test_extra_headers_allow_list() -> None:
    parsed = parse(mail(extra_headers={"auto-submitted": "auto-replied"}))
    assert str(parsed["Auto-Submitted"]) == "auto-replied"


def test_unusable_mime_types_become_octet_stream() -> None:
    parsed = parse(
        mail(
            attachments=[
                OutgoingAttachment("a", "not a type", b"1"),
                OutgoingAttachment("b.eml", "message/rfc822", b"2"),
                OutgoingAttachment("c.png", "IMAGE/PNG; name=x", b"3"),
            ]
        )
    )
    types = [p.get_content_type() for p in parsed.iter_attachments()]
    assert types == ["application/octet-stream", "application/octet-stream", "image/png"]


def test_filename_path_separators_are_replaced() -> None:
    parsed = parse(
        mail(
            attachments=[
                OutgoingAttachment("../../etc/passwd", "text/plain", b"x"),
                OutgoingAttachment("", "text/plain", b"y"),
            ]
        )
    )
    assert [p.get_filename() for p in parsed.iter_attachments()] == [
        ".._.._etc_passwd",
        "attachment",
    ]


def test_lone_surrogate_in_subject_is_replaced() -> None:
    assert str(parse(mail(subject="lone \udc80 surrogate"))["Subject"]) == "lone \ufffd surrogate"


def test_nul_and_lone_surrogates_in_body_are_replaced() -> None:
    parsed = parse(mail(body=MailBody("a\x00b\ud800c")))
    assert parsed.get_content().replace("\r\n", "\n") == "a\ufffdb?c\n"
