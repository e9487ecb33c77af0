"""Big bodies are decoded from the raw mail, not through the stdlib parser's copies; big
attachments leave the parser worker as files that the pool reads back and removes."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from bridge.connectors.email.inbound.limits import MailRejected, ParseLimits
from bridge.connectors.email.inbound.parse import parse_email, parse_email_sync
from bridge.connectors.email.inbound.pool import ParserPool

CORPUS = Path(__file__).parent / "corpus"
NEVER = 1 << 62  # a big-body threshold no mail reaches: the stdlib parses every body


def _result(raw: bytes, big_body_bytes: int) -> object:
    try:
        return dataclasses.asdict(parse_email_sync(raw, big_body_bytes=big_body_bytes))
    except MailRejected as exc:
        return ("rejected", exc.reason)


def _empty(directory: Path) -> bool:
    return not any(directory.iterdir())


def with_attachment(data: bytes, *, text: str = "See attached.") -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (
        b'From: a@example.org\r\nSubject: file\r\nContent-Type: multipart/mixed; boundary="x"\r\n'
        b"\r\n--x\r\nContent-Type: text/plain\r\n\r\n" + text.encode() + b"\r\n"
        b"--x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="data.bin"\r\n\r\n' + encoded + b"\r\n--x--\r\n"
    )


@pytest.mark.parametrize(
    "name", [p.relative_to(CORPUS).as_posix() for p in sorted(CORPUS.glob("*/*.eml"))]
)
def test_corpus_mail_parses_the_same_with_every_body_kept_out_of_the_stdlib(name: str) -> None:
    raw = (CORPUS / name).read_bytes()
    assert _result(raw, 1) == _result(raw, NEVER)


def test_big_attachment_is_decoded_into_a_file_of_the_spool_dir(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    parsed = parse_email_sync(with_attachment(data), spool_dir=tmp_path)
    (attachment,) = parsed.attachments
    assert attachment.data == b"" and attachment.path is not None
    assert Path(attachment.path).parent == tmp_path
    assert Path(attachment.path).read_bytes() == data


def test_small_attachment_stays_in_memory(tmp_path: Path) -> None:
    parsed = parse_email_sync(with_attachment(b"small"), spool_dir=tmp_path)
    assert parsed.attachments[0].data == b"small" and parsed.attachments[0].path is None
    assert list(tmp_path.iterdir()) == []


async def test_pool_delivers_a_big_attachment_and_removes_its_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB
    pool = ParserPool(1, spool_root=tmp_path)
    try:
        parsed = await parse_email(with_attachment(data), ParseLimits(), pool=pool)
    finally:
        await pool.close()
    assert parsed.attachments[0].data == data and parsed.attachments[0].path is None
    assert _empty(tmp_path)


async def test_pool_delivers_a_long_text_through_a_file_and_removes_it(tmp_path: Path) -> None:
    text = "Zeile mit Umlauten: äöü – " * 20_000  # more than the worker sends in a frame
    raw = with_attachment(b"x", text=text)
    pool = ParserPool(1, spool_root=tmp_path)
    try:
        parsed = await parse_email(raw, ParseLimits(), pool=pool)
    finally:
        await pool.close()
    assert parsed.text == parse_email_sync(raw).text
    assert _empty(tmp_path)


async def test_pool_leaves_no_file_after_a_mail_that_failed(tmp_path: Path) -> None:
    data = bytes(range(256)) * 16384  # 4 MiB: decoding it outlasts the budget
    pool = ParserPool(1, spool_root=tmp_path)
    try:
        with pytest.raises(MailRejected) as caught:
            await parse_email(with_attachment(data), ParseLimits(time_budget_s=0.001), pool=pool)
    finally:
        await pool.close()
    assert "too long" in caught.value.reason
    assert _empty(tmp_path)
