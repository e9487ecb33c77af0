"""The fault harness's verdict: what counts as lost, duplicated, out of order, tolerated."""

from __future__ import annotations

from tests.helpers.faults.ledger import Outcome, Tokens, Verdict

TOKENS = Tokens("0123abcd")
SENT = TOKENS.texts(4)


def test_every_token_once_in_order_is_clean() -> None:
    verdict = Verdict.judge("room", SENT, [*SENT, "ft-99999999-1"])  # other runs are ignored
    assert verdict.clean and verdict.line() == "room: 4 sent, 0 lost, 0 duplicated, 0 out of order"


def test_missing_repeated_and_reordered_tokens_are_counted() -> None:
    a, b, c, d = SENT
    verdict = Verdict.judge("room", SENT, [a, c, b, c, c])
    assert verdict.lost == [d]
    assert verdict.duplicated == {c: 2}
    assert verdict.order_breaks == [(c, b)]
    assert not verdict.clean


def test_tolerated_copies_are_reported_but_do_not_fail() -> None:
    a, b, c, d = SENT
    verdict = Verdict.judge("inbox", SENT, [a, b, b, c, d, d, d], check_order=False,
                            allowed_extra={b: 1, d: 1}, note="250 unheard")
    assert verdict.allowed == {b: 1}
    assert verdict.duplicated == {d: 1}
    assert "1 tolerated copies (250 unheard)" in verdict.line()


def test_outcome_fails_on_a_problem_without_token_loss() -> None:
    outcome = Outcome("x", [Verdict.judge("room", SENT, SENT)], problems=["no notice"])
    assert not outcome.clean and "problem: no notice" in outcome.report()


def test_tokens_are_found_by_kind_and_run() -> None:
    text = f"{TOKENS.text(3)} {TOKENS.file(3)}.bin {TOKENS.sentinel(1)} ft-ffffffff-3"
    assert TOKENS.found_in(text, "ft") == [TOKENS.text(3)]
    assert TOKENS.found_in(text, "att") == [TOKENS.file(3)]
    assert TOKENS.found_in(text, "sentinel") == [TOKENS.sentinel(1)]
