"""`preview`: the JSON objects for a mail file, and the command-line entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_asyncio

from bridge.connectors.email.inbound.limits import ParseLimits
from bridge.connectors.email.inbound.pool import ParserPool
from bridge.connectors.email.inbound.preview import main, preview
from bridge.network.placeholders import PLACEHOLDER_PREFIX
from tests.helpers.matrix_html import check_content

CORPUS = Path(__file__).parent / "corpus"
KEYS = {"type", "content", "sender", "thread_root", "reply_to", "attachments"}


@pytest_asyncio.fixture(scope="module")
async def pool():
    parser_pool = ParserPool(1)
    yield parser_pool
    await parser_pool.close()


async def test_new_thread_shows_subject_and_attachments(pool: ParserPool) -> None:
    raw = (CORPUS / "attachments/nodemailer-mailparser__nodemailer.eml").read_bytes()
    events = await preview(raw, pool=pool)
    assert all(set(e) == KEYS for e in events)
    first = events[0]
    assert first["sender"] == "andris@kreata.ee"
    assert first["thread_root"] is None and first["reply_to"] is None
    assert first["content"]["formatted_body"].startswith(
        "<strong>Nodemailer is unicode friendly ✔ ("
    )
    # The embedded images are shown inside the text; the other file gets its own event.
    assert [a["filename"] for a in first["attachments"]] == ["image.png", "nyan cat ✔.gif"]
    files = events[1:]
    assert [e["content"]["filename"] for e in files] == ["notes.txt"]
    for event in files:
        (attachment,) = event["attachments"]
        assert event["content"]["url"].startswith(PLACEHOLDER_PREFIX)
        assert attachment["size"] == event["content"]["info"]["size"] > 0
        assert attachment["mimetype"] == event["content"]["info"]["mimetype"]
    json.dumps(events)  # JSON-ready


async def test_reply_has_thread_and_no_subject(pool: ParserPool) -> None:
    raw = (CORPUS / "replies-quoting/imap_tools__plain_emails_raw_email_reply.eml").read_bytes()
    (event,) = await preview(raw, pool=pool)
    assert event["thread_root"] == "<473FF3B8.9020707@xxx.org>"
    assert event["reply_to"] == "<348F04F142D69C21-291E56D292BC@xxxx.net>"
    assert event["content"]["body"] == "Message body"
    assert "Test reply email" not in json.dumps(event)


async def test_rejected_mail_previewed_as_notice_with_raw(pool: ParserPool) -> None:
    raw = (CORPUS / "structure/flanker__torture.eml").read_bytes()
    events = await preview(raw, limits=ParseLimits(max_bytes=100_000), pool=pool)
    notice, attachment = events
    assert notice["content"]["msgtype"] == "m.notice" and "limit" in notice["content"]["body"]
    assert notice["sender"] == "mrc@cac.washington.edu"
    assert attachment["attachments"] == [
        {"filename": "message.eml", "mimetype": "message/rfc822", "size": len(raw)}
    ]
    for event in events:
        check_content(event["content"])


def test_main_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / "bounces/sisimai__lhost-exim-01.eml"
    assert main([str(path), "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert events[0]["content"]["msgtype"] == "m.notice"
    assert "kijitora@example.ed.jp" in events[0]["content"]["body"]


def test_main_prints_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(CORPUS / "charsets/flanker__bilingual-simple.eml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[m.text] from hello@example.com") and "А эта линия по-русски." in out


def test_main_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.eml"), "--json"]) == 2
    assert "cannot read" in capsys.readouterr().err
