"""The adaptive policy's judgement of the cheap drafts in hand, by the scores they came with."""

from __future__ import annotations

import pytest

from spec_sdk.adaptive_hand import HandJudge
from spec_sdk.types import Draft


def _prior(name: str, k: int) -> list[float]:
    return [0.5] * k


def test_scores_are_calibrated_per_bin_and_the_worth_weighs_each_token() -> None:
    """A proposer whose strong matches are right and weak ones wrong: the judge learns that
    from hindsight, takes a strong draft (at a length where its tokens still pay) and drops a
    weak one; another proposer with no such signal is compared on the same scale."""
    judge = HandJudge()
    truth = (7, 7, 7, 7, 7, 7)
    for _ in range(40):
        held = {"a": ((7, 7, 7, 7, 7, 7), 5.0, False), "b": ((3, 3), 0.3, False)}
        judge.learn(held, True, None, 0, 0, truth)  # nothing verified: matched against the emitted
    strong, weak = Draft(tokens=[7] * 6, score=5.0), Draft(tokens=[3, 3], score=0.3)
    # a token costs a hundredth of a step: the whole strong draft pays
    name, k, worth = judge.pick({"a": strong, "b": weak}, True, _prior, 0.0001, 0.0, 100.0)
    assert (name, k) == ("a", 6) and 5.0 < worth < 6.0 - 0.06  # six tokens all but sure, less their price
    # the weak draft is worth nothing once the forward's first draft costs a tenth of a step
    assert judge.pick({"b": weak}, True, _prior, 0.0001, 0.001, 100.0) == (None, 0, 0.0)
    # tokens at a third of a step each: the strong draft is cut where the next token would not pay
    a_half = {"a": ((7, 7, 9, 9, 9, 9), 5.0, False)}  # its strong matches now hold for two tokens
    for _ in range(200):
        judge.learn(a_half, True, None, 0, 0, truth)
    assert judge.pick({"a": strong}, True, _prior, 0.0033, 0.0, 100.0)[:2] == ("a", 2)
    # a measured curve replaces the line: the first token dear, the next ones nearly free
    # (as a CPU's matmul on a few more rows): the whole draft pays again
    curve = [0.0, 0.005, 0.0055, 0.006, 0.0065, 0.007, 0.0075]
    assert judge.pick({"a": strong}, True, _prior, 0.0033, 0.0, 100.0, curve)[:2] == ("a", 6)

def test_what_the_step_did_not_emit_is_not_counted_against_a_draft() -> None:
    """Hindsight ends where the emitted tokens end: a draft that matched all of them is not
    rejected past them (else a request that does not speculate would teach that every draft
    stops after one token)."""
    judge = HandJudge()
    for _ in range(50):
        judge.learn({"a": ((1, 2, 3, 4), 2.5, False)}, True, None, 0, 0, (1,))  # one token emitted
    gains = judge.expected("a", True, 2.5, 4, [0.9] * 4)
    # position 0 learned as always right; the rest stay at the prior
    assert gains[1] > 0.95 and gains[4] > 0.95 + 0.9 * 0.95 + 0.5


def test_a_sampled_draft_is_learned_only_when_it_was_verified() -> None:
    judge = HandJudge()
    held = {"s": ((1, 2, 3), 2.0, True)}
    judge.learn(held, False, None, 0, 0, (1, 2, 3, 4))  # in the shadow: a match would mean nothing
    assert not judge.bins
    judge.learn(held, False, "s", 3, 1, (1, 9))  # verified, cut to 3 tokens: 1 accepted
    (acc,) = judge.bins.values()
    assert acc.tried[:2] == [1.0, 1.0] and acc.accepted[:2] == [1.0, 0.0]


def test_greedy_and_sampled_requests_are_learned_apart_and_unknown_proposers_keep_the_plan() -> None:
    judge = HandJudge()
    for _ in range(30):
        judge.learn({"a": ((5, 5, 5), 3.0, False)}, True, None, 0, 0, (5, 5, 5, 5))
    d = Draft(tokens=[5, 5, 5], score=3.0)
    assert judge.expected("a", True, 3.0, 3, [0.2] * 3)[3] > 2.5
    assert judge.expected("a", False, 3.0, 3, [0.2] * 3)[3] < 0.3  # sampled: still the prior
    assert judge.pick({"a": d}, True, lambda n, k: None, 0.0001, 0.0, 100.0) is None
