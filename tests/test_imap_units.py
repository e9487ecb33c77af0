"""Pure parts of the IMAP package: response parsing, folder-name encoding, back-off, settings."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta, timezone
import gc
import random

import pytest

from bridge.connectors.email.imap import (
    Backfill,
    Backoff,
    DeliveryRetry,
    ImapAccount,
    ImapConfigError,
    ImapConnectFailed,
    ImapConnection,
    ImapProtocolError,
    mutf7,
)
from bridge.connectors.email.imap.changes import Changes
from bridge.connectors.email.imap.folder_sync import message_id_of
from bridge.connectors.email.imap.responses import (
    imap_date,
    parse_appenduid,
    parse_fetch,
    parse_internal_date,
    parse_list,
    parse_search,
    parse_select,
    quote_folder,
    uid_set,
)


def test_account_refuses_plaintext_to_remote_host() -> None:
    with pytest.raises(ImapConfigError) as info:
        ImapAccount("imap.example.org", 143, "plain", "u", "p")
    assert "only allowed to this machine" in info.value.reason
    for host in ("127.0.0.1", "localhost", "::1", "127.1.2.3"):
        ImapAccount(host, 143, "plain", "u", "p")


def test_account_rejects_unknown_security_and_hides_password() -> None:
    with pytest.raises(ImapConfigError):
        ImapAccount("127.0.0.1", 993, "ssl", "u", "p")
    account = ImapAccount("127.0.0.1", 993, "tls", "user", "s3cret-pw")
    assert "s3cret-pw" not in repr(account)


def test_mutf7_round_trip() -> None:
    cases = {
        "INBOX": "INBOX",
        "Entwürfe": "Entw&APw-rfe",
        "A & B": "A &- B",
        "日本語": "&ZeVnLIqe-",
        "x~y": "x~y",
    }
    for text, wire in cases.items():
        assert mutf7.encode(text) == wire
        assert mutf7.decode(wire) == text
    assert quote_folder('Sent "old"') == '"Sent \\"old\\""'


def test_parse_select() -> None:
    lines = [
        b"FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b"OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.",
        b"12 EXISTS",
        b"0 RECENT",
        b"OK [UIDVALIDITY 1795690897] UIDs valid",
        b"OK [UIDNEXT 40] Predicted next UID",
        b"[READ-WRITE] Select completed (0.001 + 0.000 secs).",
    ]
    status = parse_select(lines)
    assert (status.uidvalidity, status.uidnext, status.exists) == (1795690897, 40, 12)
    assert status.highestmodseq is None
    assert parse_select([*lines[:-1], b"OK [HIGHESTMODSEQ 77] Highest", lines[-1]]).highestmodseq == 77
    with pytest.raises(ImapProtocolError):
        parse_select([b"3 EXISTS", b"Select completed"])


def test_announcements_are_told_from_answers() -> None:
    changes = Changes()
    nothing = frozenset[str]()
    changes.note(b"* 3 EXISTS", frozenset({"SELECT"}))  # describes the folder being selected
    assert (changes.exists_seen, changes.event.is_set()) == (1, False)
    changes.note(b"* 2 FETCH (UID 9 FLAGS (\\Seen))", frozenset({"FETCH"}))  # our own FETCH
    changes.note(b"* STATUS Sent (UIDNEXT 5)", frozenset({"STATUS"}))  # our own STATUS
    assert not changes.event.is_set()
    changes.note(b"* 1 FETCH (MODSEQ (3) FLAGS (\\Seen))", nothing)
    changes.note(b'* STATUS "Sent Items" (MESSAGES 2 UIDNEXT 3)', nothing)
    changes.note(b"* STATUS Entw&APw-rfe (MESSAGES 1)", frozenset({"FETCH"}))
    assert changes.event.is_set()
    assert changes.take() == (True, {"Sent Items", "Entwürfe"})
    assert changes.take() == (False, set()) and not changes.event.is_set()
    changes.note(b"* 4 EXISTS", nothing)
    assert changes.take() == (True, set()) and changes.exists_seen == 2
    changes.note(b"* BYE Logging out", frozenset({"LOGOUT"}))  # the answer to our LOGOUT
    assert changes.bye is None
    changes.note(b"* BYE Server shutting down.", nothing)
    assert changes.bye == "BYE Server shutting down." and changes.event.is_set()


def test_parse_search() -> None:
    assert parse_search([b"3 4 17", b"Search completed (0.001 secs)."]) == [3, 4, 17]
    assert parse_search([b"", b"Search completed."]) == []


def test_parse_fetch_with_literals_and_trailing_items() -> None:
    body = b"Subject: hi\r\n\r\n(unbalanced ( parens in body\r\n"
    lines = [
        b"1 FETCH (UID 7 FLAGS (\\Seen $Forwarded) "
        b'INTERNALDATE "26-Nov-2025 10:58:01 +0100" BODY[] {%d}' % len(body),
        bytearray(body),
        b")",
        b"2 FETCH (UID 9 BODY[] {3}",
        bytearray(b"abc"),
        b' FLAGS () INTERNALDATE " 1-Feb-2024 00:00:00 -0000")',
        b"3 FETCH (FLAGS (\\Deleted))",
        b"4 FETCH (UID 12 BODY[HEADER.FIELDS (MESSAGE-ID)] {20}",
        bytearray(b"Message-ID: <a@b>\r\n\r"),
        b")",
        b"5 FETCH (UID 13 RFC822.SIZE 4711 BODY[HEADER.FIELDS (MESSAGE-ID)] \"\")",
        b"Fetch completed (0.001 + 0.000 secs).",
    ]
    recs = parse_fetch(lines)
    assert [r.uid for r in recs] == [7, 9, None, 12, 13]
    assert recs[0].flags == frozenset({"\\Seen", "$Forwarded"})
    assert recs[0].sections["BODY[]"] == body
    assert recs[0].internal_date == datetime(2025, 11, 26, 9, 58, 1, tzinfo=UTC)
    assert recs[1].sections["BODY[]"] == b"abc" and recs[1].flags == frozenset()
    assert recs[1].internal_date == datetime(2024, 2, 1, tzinfo=UTC)
    assert recs[3].sections["BODY[HEADER.FIELDS (MESSAGE-ID)]"].startswith(b"Message-ID: <a@b>")
    assert recs[4].size == 4711 and recs[4].sections["BODY[HEADER.FIELDS (MESSAGE-ID)]"] == b""


def test_parse_internal_date_rejects_garbage() -> None:
    assert parse_internal_date("31-Foo-2024 00:00:00 +0000") is None
    assert parse_internal_date("yesterday") is None
    assert parse_internal_date("07-Mar-2025 23:59:59 -0830") == datetime(
        2025, 3, 7, 23, 59, 59, tzinfo=timezone(-timedelta(hours=8, minutes=30))
    )


def test_parse_list_quoted_literal_and_utf7_names() -> None:
    lines = [
        b'(\\HasNoChildren \\Sent) "/" Sent',
        b'(\\HasNoChildren) "/" "Old mail"',
        b'(\\Noselect) NIL "Entw&APw-rfe"',
        b'(\\HasNoChildren) "/" {9}',
        bytearray(b'odd "box"'),
        b"List completed.",
    ]
    entries = parse_list(lines)
    assert [e.name for e in entries] == ["Sent", "Old mail", "Entwürfe", 'odd "box"']
    assert "\\Sent" in entries[0].flags and entries[0].delimiter == "/"
    assert entries[2].delimiter is None and entries[2].wire_name == "Entw&APw-rfe"


def test_parse_appenduid_and_uid_set_and_dates() -> None:
    assert parse_appenduid([b"[APPENDUID 1795690898 5] Append completed."]) == (1795690898, 5)
    assert parse_appenduid([b"Append completed."]) is None
    assert uid_set([9, 1, 2, 3, 7, 10, 3]) == "1:3,7,9:10"
    assert uid_set([5]) == "5"
    with pytest.raises(ValueError):
        uid_set([])
    assert imap_date(date(2025, 3, 7)) == "07-Mar-2025"


def test_message_id_of() -> None:
    assert message_id_of(b"Message-ID: <x@y>\r\n\r\n") == "<x@y>"
    assert message_id_of(b"Message-Id:\r\n  <folded@y>\r\n\r\n") == "<folded@y>"
    assert message_id_of(b"\r\n") is None
    assert message_id_of(None) is None


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = Backoff(initial_s=1.0, max_s=300.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(300.0, 2.0**i) for i in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0
    with pytest.raises(ValueError):
        Backoff(initial_s=0)


def test_policies_validate_and_delays_double() -> None:
    retry = DeliveryRetry(attempts=5, initial_delay_s=1.0, max_delay_s=5.0)
    assert [retry.delay(n) for n in range(1, 5)] == [1.0, 2.0, 4.0, 5.0]
    with pytest.raises(ValueError):
        DeliveryRetry(attempts=0)
    with pytest.raises(ValueError):
        Backfill(max_age_days=None, max_messages=-1)


async def test_a_greeting_that_stalls_fails_within_the_timeout_and_leaves_nothing_pending() -> None:
    """A server that greets and then never answers CAPABILITY (no real server can be made to do
    that on cue). The login fails after the account's timeout instead of hanging (aioimaplib's
    own timeout cannot end that wait), and aioimaplib's greeting task ends with the connection
    instead of being garbage-collected holding its lock (an unraisable error in whatever test
    runs next)."""
    answered = asyncio.Event()

    async def greet_then_hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK ready\r\n")
        await writer.drain()
        await reader.readline()  # the CAPABILITY command, never answered
        answered.set()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(greet_then_hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    account = ImapAccount("127.0.0.1", port, "plain", "user", "secret", timeout=0.5)
    try:
        with pytest.raises(ImapConnectFailed, match=r"did not complete its greeting within 0\.5 s"):
            async with asyncio.timeout(30):  # only a guard: the bug was a wait without end
                await ImapConnection.open(account)
        assert answered.is_set()
        for _ in range(3):  # let cancellations run, then collect what is left
            await asyncio.sleep(0)
        gc.collect()
    finally:
        server.close()
        await server.wait_closed()
