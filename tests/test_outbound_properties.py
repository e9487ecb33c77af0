"""Property tests: whatever goes into compose() gives HeaderInjection or a clean, faithful mail."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
import re
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.connectors.email.addresses import Mailbox, normalise_address
from bridge.connectors.email.outbound import (
    HeaderInjection,
    MailBody,
    OutgoingAttachment,
    OutgoingMail,
    clean_display_name,
    clean_header_text,
    compose,
    message_id_for_event,
    normalise_filename,
)
from bridge.connectors.email.outbound.header_text import MAX_DISPLAY_NAME

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DANGEROUS = ["\r", "\n", "\r\n", "\x00", "\r\nBcc: evil@attacker.example", "\nX-Injected: 1"]


def _q_word(payload: str) -> str:
    encoded = "".join(chr(b) if chr(b).isalnum() else f"={b:02X}" for b in payload.encode())
    return f"=?UTF-8?Q?{encoded}?="


def _b_word(payload: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(payload.encode()).decode()}?="


payloads = st.one_of(st.text(max_size=20), st.sampled_from(DANGEROUS).map(lambda d: "x" + d + "y"))
encoded_words = st.one_of(st.builds(_q_word, payloads), st.builds(_b_word, payloads))
# Free text as found in subjects, names and file names: any Unicode, long runs, injection attempts.
header_text = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.text(alphabet=st.characters(codec="ascii"), max_size=30),
        st.sampled_from(DANGEROUS),
        encoded_words,
        st.just(" "),
        st.text(alphabet="ab ", min_size=80, max_size=300),
        st.text(
            alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x2FFF),
            min_size=40,
            max_size=120,
        ),
    ),
    max_size=6,
).map("".join)

_atom = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-",
    min_size=1,
    max_size=12,
)
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
addresses = st.builds(
    lambda atoms, labels, tld: normalise_address(".".join(atoms) + "@" + ".".join([*labels, tld])),
    st.lists(_atom, min_size=1, max_size=3),
    st.lists(_label, min_size=1, max_size=3),
    st.sampled_from(["org", "test", "example", "de"]),
).filter(lambda a: len(a.partition("@")[0]) <= 64)
mailboxes = st.builds(Mailbox, addr=addresses, name=header_text)
filenames = st.one_of(header_text, st.text(max_size=300), st.just(""))
msg_ids = st.from_regex(r"<[a-zA-Z0-9.$=_+-]{1,40}@[a-z0-9.-]{1,30}>", fullmatch=True)
reference_ids = st.one_of(msg_ids, msg_ids.map(lambda i: i[:-1] + "\r\n>"))
bodies = st.text(max_size=2000)
attachments = st.lists(
    st.builds(
        OutgoingAttachment,
        filename=filenames,
        mimetype=st.sampled_from(
            ["application/pdf", "image/png", "text/plain", "bogus", "message/rfc822"]
        ),
        data=st.binary(max_size=300),
    ),
    max_size=3,
)

TOP_HEADERS = {
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "auto-submitted",
}
PART_HEADERS = {"content-type", "content-transfer-encoding", "content-disposition"}


def _unsafe(value: str) -> bool:
    """Could this input legitimately make compose refuse it?"""
    return "=?" in value or any(
        c in "\r\n\x00" or (unicodedata.category(c) == "Cc" and not c.isspace()) for c in value
    )


def _serialise(msg: EmailMessage) -> bytes:
    raw = msg.as_bytes(policy=policy.SMTP)
    lines = raw.split(b"\r\n")
    assert lines[-1] == b""
    for line in lines[:-1]:
        assert b"\r" not in line and b"\n" not in line and b"\x00" not in line
        assert len(line) <= 998
    assert raw.isascii()
    return raw


def _check_headers(parsed: EmailMessage, expected_top: set[str]) -> None:
    names = [k.lower() for k in parsed.keys()]
    assert len(names) == len(set(names)), names
    assert set(names) <= TOP_HEADERS
    assert expected_top <= set(names)
    for part in parsed.walk():
        if part is not parsed:
            assert {k.lower() for k in part.keys()} <= PART_HEADERS
    assert not parsed.defects
    for name in parsed.keys():
        assert not parsed[name].defects, (name, parsed[name].defects)


@SETTINGS
@given(
    sender=mailboxes,
    to=st.lists(mailboxes, min_size=1, max_size=3),
    cc=st.lists(mailboxes, max_size=2),
    subject=header_text,
    body=bodies,
    html=st.one_of(st.none(), bodies),
    files=attachments,
    event_id=st.text(min_size=1, max_size=80),
    in_reply_to=st.one_of(st.none(), reference_ids),
    references=st.lists(reference_ids, max_size=30),
    auto=st.one_of(st.none(), st.sampled_from(["auto-generated", "auto-replied"]), header_text),
)
def test_compose_is_safe_and_faithful(
    sender, to, cc, subject, body, html, files, event_id, in_reply_to, references, auto
) -> None:
    mail = OutgoingMail(
        sender=sender,
        to=to,
        cc=cc,
        subject=subject,
        body=MailBody(body, html),
        message_id=message_id_for_event(event_id, "test.local"),
        date=datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2))),
        attachments=files,
        in_reply_to=in_reply_to,
        references=references,
        extra_headers={"Auto-Submitted": auto} if auto is not None else {},
    )
    texts = [subject, sender.name, *(m.name for m in to + cc), *(f.filename for f in files)]
    texts += [auto] if auto is not None else []
    ids = [*references, *([in_reply_to] if in_reply_to else [])]
    try:
        msg = compose(mail)
    except HeaderInjection:
        assert any(_unsafe(t) for t in texts) or any("\r" in i for i in ids)
        return

    parsed = BytesParser(policy=policy.default).parsebytes(_serialise(msg))
    expected = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type"}
    _check_headers(parsed, expected)

    assert [a.addr_spec for a in parsed["From"].addresses] == [sender.addr]
    assert parsed["From"].addresses[0].display_name == clean_display_name(sender.name, "name")
    got = [a.addr_spec for h in ("To", "Cc") if parsed[h] is not None for a in parsed[h].addresses]
    assert len(got) == len(set(got))
    assert set(got) == {m.addr for m in to + cc}
    assert str(parsed["Subject"]) == clean_header_text(subject, "subject")
    assert str(parsed["Message-ID"]) == mail.message_id
    assert parsed["Date"].datetime == mail.date
    if auto is not None:
        assert str(parsed["Auto-Submitted"]) == clean_header_text(auto, "Auto-Submitted")
    if in_reply_to:
        assert str(parsed["In-Reply-To"]) == in_reply_to
        assert str(parsed["References"]).split()[-1] == in_reply_to
    if ids:
        refs = str(parsed["References"]).split()
        assert set(refs) <= set(ids) and len(refs) <= 20

    plain = parsed.get_body(("plain",))
    assert _lines(plain.get_content()) == _as_text_part(body)
    if html is not None:
        assert _lines(parsed.get_body(("html",)).get_content()) == _as_text_part(html)
    got_files = [
        (p.get_filename(), p.get_content_type(), p.get_payload(decode=True))
        for p in parsed.iter_attachments()
    ]
    assert [(n, d) for n, _, d in got_files] == [
        (normalise_filename(f.filename), f.data) for f in files
    ]


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n")


def _as_text_part(text: str) -> str:
    text = re.sub(r"\r\n?", "\n", text.replace("\x00", "\ufffd"))
    return text if text.endswith("\n") else text + "\n"


@SETTINGS
@given(subject=header_text)
def test_subject_alone(subject: str) -> None:
    mail = OutgoingMail(
        sender=Mailbox("alice@test.local", "Alice"),
        to=[Mailbox("bob@test.local")],
        subject=subject,
        body=MailBody("hi"),
        message_id="<x@test.local>",
        date=datetime(2024, 1, 1, tzinfo=UTC),
    )
    try:
        msg = compose(mail)
    except HeaderInjection:
        assert _unsafe(subject)
        return
    parsed = BytesParser(policy=policy.default).parsebytes(_serialise(msg))
    _check_headers(parsed, {"from", "to", "subject", "message-id"})
    assert str(parsed["Subject"]) == clean_header_text(subject, "subject")
    if not _unsafe(subject):
        assert str(parsed["Subject"]) == " ".join(subject.split())


@SETTINGS
@given(name=header_text, filename=filenames)
def test_display_name_and_filename(name: str, filename: str) -> None:
    mail = OutgoingMail(
        sender=Mailbox("alice@test.local", name),
        to=[Mailbox("bob@test.local", name)],
        subject="s",
        body=MailBody("hi"),
        message_id="<x@test.local>",
        date=datetime(2024, 1, 1, tzinfo=UTC),
        attachments=[OutgoingAttachment(filename, "application/octet-stream", b"\x00\x01")],
    )
    try:
        msg = compose(mail)
    except HeaderInjection:
        assert _unsafe(name) or _unsafe(filename)
        return
    parsed = BytesParser(policy=policy.default).parsebytes(_serialise(msg))
    _check_headers(parsed, {"from", "to", "subject"})
    assert parsed["From"].addresses[0].display_name == clean_display_name(name, "name")
    assert parsed["To"].addresses[0].display_name == clean_display_name(name, "name")
    if not _unsafe(name) and len(" ".join(name.split())) <= MAX_DISPLAY_NAME:
        assert parsed["From"].addresses[0].display_name == " ".join(name.split())
    (attachment,) = parsed.iter_attachments()
    assert attachment.get_filename() == normalise_filename(filename)
    if not _unsafe(filename):
        expected = " ".join(filename.split()).replace("/", "_").replace("\\", "_").replace('"', "'")
        expected = expected or "attachment"
        assert attachment.get_filename() == expected
