"""Every message of the real-world corpus through parse + convert, against third-party expectations.

The corpus (tests/corpus, copied from the shared one with its licences) comes from other projects'
test suites. Expected outputs shipped by imap_tools and the Discourse reply trimmer are compared
here; where this bridge deliberately differs from imap_tools the reason is written down below.
"""

from __future__ import annotations

import ast
from collections import namedtuple
import csv
import datetime
import mailbox
from pathlib import Path
import re
from typing import Any

import pytest
import pytest_asyncio

from bridge.connectors.email.html_text import html_to_text
from bridge.connectors.email.inbound.convert import convert_email
from bridge.connectors.email.inbound.parse import parse_email_sync
from bridge.connectors.email.inbound.pool import ParserPool
from bridge.connectors.email.inbound.preview import preview
from bridge.connectors.email.inbound.quotes import split_text
from bridge.network.placeholders import PLACEHOLDER_PREFIX, referenced_keys
from tests.helpers.matrix_html import check_content

CORPUS = Path(__file__).parent / "corpus"
MESSAGES = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.glob("*/*.eml"))


@pytest_asyncio.fixture(scope="module")
async def pool():
    parser_pool = ParserPool(2)
    yield parser_pool
    await parser_pool.close()


def test_corpus_is_complete() -> None:
    assert len(MESSAGES) == 242
    assert (CORPUS / "LICENSES").is_dir() and (CORPUS / "MANIFEST.tsv").is_file()


async def test_preview_every_message_of_the_mbox(pool: ParserPool) -> None:
    box = mailbox.mbox(CORPUS / "structure" / "mimekit__simple.mbox", create=False)
    try:
        keys = list(box.keys())
        assert keys
        for key in keys:
            events = await preview(box.get_bytes(key), pool=pool)
            assert events
            for event in events:
                check_content(event["content"])
    finally:
        box.close()


@pytest.mark.parametrize("name", MESSAGES)
async def test_preview_every_message(pool: ParserPool, name: str) -> None:
    raw = (CORPUS / name).read_bytes()
    events = await preview(raw, pool=pool)  # the time it takes: bench.conversion_cost
    assert events, "every mail must produce at least one event"
    for event in events:
        assert event["type"] == "m.room.message"
        check_content(event["content"])
        assert isinstance(event["sender"], str) and "@" in event["sender"]
        keys = referenced_keys(event["content"])
        assert len(event["attachments"]) == len(keys)
        for attachment in event["attachments"]:
            assert attachment["filename"] and "/" not in attachment["filename"]
            assert attachment["size"] >= 0
        if event["content"]["msgtype"] in ("m.image", "m.file", "m.audio", "m.video"):
            assert event["content"]["url"].startswith(PLACEHOLDER_PREFIX)
            assert event["content"]["info"]["size"] == event["attachments"][0]["size"]


# --- imap_tools expectations ----------------------------------------------------------------

_EmailAddress = namedtuple("_EmailAddress", "name email")


def _load_expected(path: Path) -> dict[str, Any]:
    """The `DATA` dict of an imap_tools expectation file (its imports are replaced by stand-ins)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body = [node for node in tree.body if not isinstance(node, (ast.Import, ast.ImportFrom))]
    namespace: dict[str, Any] = {"datetime": datetime, "EmailAddress": _EmailAddress}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)
    return namespace["DATA"]


def _imap_tools_rows() -> list[tuple[str, str]]:
    with (CORPUS / "EXPECTED.tsv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [
        (r["file"], r["expected"]) for r in rows if r["expected"].startswith("expected/imap_tools/")
    ]


IMAP_TOOLS = _imap_tools_rows()

# imap_tools walks into attached messages (message/rfc822) and reports their texts and files as
# the outer mail's; the bridge attaches such a message whole, as one .eml file.
FLATTENED = {
    "attachments/imap_tools__attachment_2_base64.eml",
    "attachments/imap_tools__attachment_7bit.eml",
    "attachments/imap_tools__attachment_emails_attachment_message_rfc822.eml",
    "bounces/imap_tools__multipart_report_emails_multipart_report_multiple_status.eml",
    "charsets/imap_tools__attachment_8bit.eml",
}
# Subjects decoded differently on purpose.
SUBJECT_DIFFERS = {
    # Raw 8-bit bytes without any declared charset, read as windows-1252; imap_tools drops them.
    "charsets/imap_tools__error_emails_invalid_subject_characters.eml": "Formação FrenetikPolis: "
    "Mega Campanha Final Verão | Cursos de Setembro",
    # RFC 2047 section 6.2 keeps the space between plain text and a following encoded word.
    "charsets/imap_tools__rfc2822_example14.eml": "Re: TEST テストテスト",
}
# The detached signature of a multipart/signed mail is verification data, not a file for the
# reader, and is not posted (a signature part elsewhere is an ordinary file).
SIGNED = {
    "signed-encrypted/imap_tools__mime_emails_raw_email_with_nested_attachment.eml",
    "signed-encrypted/imap_tools__mime_emails_sig_only_email.eml",
}
SIGNATURE_TYPES = {"application/pkcs7-signature", "application/pgp-signature"}
# A text/plain part with a Content-ID but no file name: imap_tools lists it as a file too, the
# bridge shows it as the message text (and it is in `text` for both).
TEXT_NOT_FILE = {"inline/imap_tools__text_with_content_id.eml"}


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _name_matches(ours: str, theirs: str) -> bool:
    """imap_tools leaves U+FFFD for undecodable bytes; the bridge may decode them to a letter."""
    if not theirs:
        return True
    pattern = "".join("." if ch == "\ufffd" else re.escape(ch) for ch in theirs)
    return re.fullmatch(pattern, ours) is not None


@pytest.mark.parametrize(("name", "expected_file"), IMAP_TOOLS)
def test_matches_imap_tools(name: str, expected_file: str) -> None:
    expected = _load_expected(CORPUS / expected_file)
    parsed = parse_email_sync((CORPUS / name).read_bytes())

    subject = SUBJECT_DIFFERS.get(name, expected["subject"])
    assert " ".join(parsed.subject.split()) == " ".join(subject.split())

    if name in FLATTENED:
        assert _squash(expected["text"]).startswith(_squash(parsed.text))
    else:
        assert _squash(parsed.text) == _squash(expected["text"])

    theirs = expected["attachments"]
    if name in SIGNED:
        assert any(a["content_type"] in SIGNATURE_TYPES for a in theirs)
        theirs = [a for a in theirs if a["content_type"] not in SIGNATURE_TYPES]
    if name in TEXT_NOT_FILE:
        assert all(
            a["payload"].decode("utf-8", "replace").strip()[:40] in parsed.text for a in theirs
        )
        theirs = []
    ours = parsed.attachments
    if name in FLATTENED:
        payloads = [a["payload"] for a in theirs]
        assert all(a.data in payloads for a in ours)
    else:
        assert [a.data for a in ours] == [a["payload"] for a in theirs]
        for mine, their in zip(ours, theirs, strict=True):
            assert _name_matches(mine.filename, their["filename"]), (
                mine.filename,
                their["filename"],
            )


def test_imap_tools_expectations_are_all_used() -> None:
    assert len(IMAP_TOOLS) >= 40


# --- reply trimmer expectations -------------------------------------------------------------

TRIMMER = CORPUS / "expected" / "email_reply_trimmer"
TRIMMER_CASES = sorted(p.stem for p in (TRIMMER / "trimmed").glob("*.txt"))


@pytest.mark.parametrize("case", TRIMMER_CASES)
def test_reply_trimmer_expectations(case: str) -> None:
    source = (CORPUS / "replies-quoting" / f"email_reply_trimmer__{case}.txt").read_text(
        encoding="utf-8"
    )
    split = split_text(source)
    assert (
        split.kept.strip()
        == (TRIMMER / "trimmed" / f"{case}.txt").read_text(encoding="utf-8").strip()
    )
    elided = (TRIMMER / "elided" / f"{case}.txt").read_text(encoding="utf-8")
    # The trimmer joins a wrapped "On … wrote:" header into one line; compare ignoring layout.
    assert " ".join(split.stripped.split()) == " ".join(elided.split())


def test_reply_trimmer_cases_found() -> None:
    assert len(TRIMMER_CASES) == 10


# --- quoting styles of mail clients (client-replies/, written for this project) -------------

CLIENT_REPLIES = list(csv.DictReader(
    (CORPUS / "expected" / "client_replies.tsv").read_text(encoding="utf-8").splitlines(), delimiter="\t"))
_DETAILS = re.compile(r"<details><summary>[^<]*</summary>(.*?)</details>", re.DOTALL)


@pytest.mark.parametrize("case", CLIENT_REPLIES, ids=[c["file"].split("__")[1] for c in CLIENT_REPLIES])
def test_client_reply_shows_the_answer_and_folds_the_quote(case: dict[str, str]) -> None:
    parsed = parse_email_sync((CORPUS / case["file"]).read_bytes())
    content = convert_email(parsed, include_subject=False).events[0].content
    formatted = content["formatted_body"]
    folded = _DETAILS.findall(formatted)
    assert len(folded) == 1, formatted
    visible = html_to_text(_DETAILS.sub("", formatted))
    assert " ".join(visible.split()) == case["answer"]
    assert case["quoted"] in html_to_text(folded[0])
    assert case["answer"] in content["body"] and case["quoted"] in content["body"]
