"""NgramProposer: same drafts as a brute-force search, options checked, cost per step bounded."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk.errors import ConfigError
from spec_sdk.proposers.base import Proposer, RequestView
from spec_sdk.proposers.ngram import CHOICES, NgramProposer
from spec_sdk.proposers.registry import create
from spec_sdk.types import SamplingParams, SpecStats


def view(tokens: list[int], rid: str = "r") -> RequestView:
    return RequestView(rid, tokens, len(tokens), SamplingParams(), SpecStats())


def brute_force(tokens: list[int], min_n: int, max_n: int, choice: str, budget: int) -> list[int] | None:
    """Scan the whole history: the specification the incremental index must meet."""
    length = len(tokens)
    for n in range(min(max_n, length - 1), min_n - 1, -1):
        suffix = tokens[length - n :]
        # continuation starts of earlier occurrences (each has at least one following token)
        conts = [s + n for s in range(length - n) if tokens[s : s + n] == suffix]
        if not conts:
            continue
        if choice == "first":
            start = conts[0]
        elif choice == "last":
            start = conts[-1]
        else:
            counts = Counter(tokens[c] for c in conts)
            top = max(counts.values())
            start = max(c for c in conts if counts[tokens[c]] == top)
        seq = list(tokens)
        for i in range(budget):
            seq.append(seq[start + i])
        return seq[length:]
    return None


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[int], list[int], int, int, str, list[int]]:
    vocab = draw(st.integers(1, 5))
    tokens = draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=80))
    cuts = sorted(draw(st.lists(st.integers(1, len(tokens)), max_size=12, unique=True)) + [len(tokens)])
    min_n = draw(st.integers(1, 3))
    max_n = draw(st.integers(min_n, 6))
    choice = draw(st.sampled_from(CHOICES))
    budgets = draw(st.lists(st.integers(0, 9), min_size=len(cuts), max_size=len(cuts)))
    return tokens, cuts, min_n, max_n, choice, budgets


@settings(max_examples=max(200, settings.default.max_examples), deadline=None)
@given(scenarios(), st.booleans(), st.booleans())
def test_incremental_matches_brute_force(
    scenario: tuple[list[int], list[int], int, int, str, list[int]], call_start: bool, call_observe: bool
) -> None:
    tokens, cuts, min_n, max_n, choice, budgets = scenario
    proposer = NgramProposer(min_n=min_n, max_n=max_n, choice=choice)
    live = tokens[: cuts[0]]
    req = view(live)
    if call_start:
        proposer.start(req)
    for i, (cut, budget) in enumerate(zip(cuts, budgets)):
        if cut > len(live):
            added = tokens[len(live) : cut]
            live.extend(added)
            if call_observe:
                proposer.observe(req, added, None)
        draft = proposer.propose([req], [budget])[0]
        expected = brute_force(live, min_n, max_n, choice, budget) if budget > 0 else None
        assert (None if draft is None else list(draft.tokens)) == expected, (i, live)
        if draft is not None:
            assert len(draft) == budget
            assert draft.parents is None and draft.probs is None
            assert draft.source == "ngram"
            assert 0.0 < draft.score <= budget
    proposer.finish(req)


def test_batch_of_requests_is_independent() -> None:
    proposer = NgramProposer(choice="last")
    a, b = view([1, 2, 3, 1, 2], "a"), view([7, 8, 9, 7, 8], "b")
    proposer.start(a)
    proposer.start(b)
    drafts = proposer.propose([a, b], [2, 3])
    assert [list(d.tokens) for d in drafts if d is not None] == [[3, 1], [9, 7, 8]]
    proposer.finish(a)
    proposer.finish(b)
    assert not proposer._indexes  # state lives only while a request does


def test_overlapping_continuation_copies_forward() -> None:
    proposer = NgramProposer(min_n=2, max_n=2, choice="last")
    draft = proposer.propose([view([5, 1, 2, 1, 2])], [5])[0]
    assert draft is not None and list(draft.tokens) == [1, 2, 1, 2, 1]


def test_choice_rules_differ() -> None:
    # after "1": 2 at 1 (first), 3 at 3, 5 and 7 (most frequent), 2 again at 9 (last)
    tokens = [1, 2, 1, 3, 1, 3, 1, 3, 1, 2, 9, 1]
    got = {c: NgramProposer(max_n=1, choice=c).propose([view(tokens)], [1])[0] for c in CHOICES}
    assert {c: list(d.tokens) for c, d in got.items() if d is not None} == {
        "first": [2],
        "last": [2],
        "frequent": [3],
    }
    # "first" and "last" copy from different places
    first = NgramProposer(max_n=1, choice="first").propose([view(tokens)], [2])[0]
    last = NgramProposer(max_n=1, choice="last").propose([view(tokens)], [2])[0]
    assert first is not None and last is not None
    assert list(first.tokens) == [2, 1] and list(last.tokens) == [2, 9]
    frequent = NgramProposer(max_n=1, choice="frequent").propose([view(tokens)], [2])[0]
    assert frequent is not None and list(frequent.tokens) == [3, 1]  # its latest occurrence


def test_min_and_max_n_respected() -> None:
    # suffix [2, 3] occurred once (then 5); suffix [3] last occurred before 9
    tokens = [1, 2, 3, 5, 3, 9, 2, 3]

    def first_token(**options: object) -> int | None:
        draft = NgramProposer(choice="last", **options).propose([view(tokens)], [1])[0]  # type: ignore[arg-type]
        return None if draft is None else draft.tokens[0]

    assert first_token(max_n=4) == 5  # the longest match wins
    assert first_token(max_n=1) == 9  # longer matches ignored
    assert first_token(min_n=2, max_n=2) == 5
    assert first_token(min_n=3, max_n=4) is None  # [9, 2, 3] never occurred before


def test_budget_zero_and_no_match() -> None:
    proposer = NgramProposer()
    assert proposer.propose([view([1, 2, 1])], [0]) == [None]
    assert proposer.propose([view([1, 2, 3])], [4]) == [None]
    assert proposer.propose([view([1])], [4]) == [None]


def test_longer_matches_score_higher() -> None:
    long = NgramProposer().propose([view([1, 2, 3, 4, 5, 1, 2, 3, 4])], [4])[0]
    short = NgramProposer().propose([view([1, 2, 3, 4, 5, 9, 8, 7, 4])], [4])[0]
    assert long is not None and short is not None
    assert long.score > short.score


@pytest.mark.parametrize(
    "options",
    [
        {"min_n": 0},
        {"max_n": 0},
        {"min_n": 3, "max_n": 2},
        {"min_n": True},
        {"max_n": 2.5},
        {"choice": "random"},
        {"choice": None},
    ],
)
def test_bad_options_raise_config_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        NgramProposer(**options)  # type: ignore[arg-type]


def test_registered_and_conforms() -> None:
    proposer = create("ngram", max_n=3)
    assert isinstance(proposer, NgramProposer) and isinstance(proposer, Proposer)
    assert proposer.name == "ngram" and proposer.needs_hidden_states is False


class CountingList(list[int]):
    """A token list that counts how many elements the proposer reads."""

    reads = 0

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        got = super().__getitem__(i)
        CountingList.reads += len(got) if isinstance(got, list) else 1
        return got


@pytest.mark.parametrize("choice", CHOICES)
def test_step_cost_does_not_grow_with_context(choice: str) -> None:
    """Structural: a step reads only the new tokens plus O(max_n + budget), and adds only
    O(new tokens * n-gram sizes) index entries, whether the context is short or long."""
    min_n, max_n, budget = 1, 4, 8
    pattern = [i % 13 for i in range(40)]
    for context in (100, 20_000):
        tokens = CountingList(((pattern * (context // len(pattern) + 1))[:context]))
        req = view(tokens)
        proposer = NgramProposer(min_n=min_n, max_n=max_n, choice=choice)
        proposer.start(req)
        for step in range(30):
            new = 1 + step % 3
            tokens.extend(pattern[step : step + new])
            before_entries = _entries(proposer, req)
            CountingList.reads = 0
            proposer.propose([req], [budget])
            sizes = max_n - min_n + 1
            assert CountingList.reads <= (new + max_n) + new * sizes + max_n + budget
            assert _entries(proposer, req) - before_entries <= 3 * new * sizes


def _entries(proposer: NgramProposer, req: RequestView) -> int:
    index = proposer._indexes[req.id]
    return sum(len(t) for t in index.grams.values()) + len(index.pairs) + len(index.best)
